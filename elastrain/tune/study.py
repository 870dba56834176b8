"""A hyperparameter study whose trials are elastic jobs on one shared pool of workers.

    import elastrain

    study = elastrain.Study.from_yaml("examples/tune_mlp_digits.yaml")
    result = study.optimize()          # an elastrain.StudyResult
    result.best_params, result.best_value, result.best_model

Optuna samples each trial's spec fields and decides, epoch by epoch, whether a trial is pruned; the
study runs each trial as a job and a pruned or finished trial's workers go to queued trials, or to
the running ones, which grow in place. By default the trials run from this process (each job's
controller in a thread, its workers on Ray) and the scheduler's policy shares the workers among
them (`plan_trials`); with `server=URL` they are jobs of that `elastrain server`, sized by its
scheduler among its other jobs (`elastrain.tune.trials`). The study and its trials are stored in
the jobs' database (Optuna's RDB storage), so that a study whose tuner died continues where it was
(`Study.resume`) without repeating a finished trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from elastrain import paths
from elastrain.errors import UserError
from elastrain.runs import JobState
from elastrain.spec import JobSpec, load_spec, validate_spec
from elastrain.spec.metrics import DEFAULT_METRIC
from elastrain.spec.tune import TuneSpec
from elastrain.tune.allocate import RunningTrial
from elastrain.tune.gate import OptunaPruneGate
from elastrain.tune.optuna_setup import grid_size
from elastrain.tune.space import check_space, suggest, trial_overrides
from elastrain.tune.trials import PoolTrials, ServerTrials, TrialRunner

if TYPE_CHECKING:
    import optuna

    from elastrain.client import Remote
    from elastrain.sdk import JobHandle

# How often the study follows its trials (metrics, ends) and re-plans the workers: here, or over a
# server's REST API (a few requests per trial each time).
POLL_S, SERVER_POLL_S = 0.1, 0.5
# What the study keeps in Optuna's storage besides trials: the job it tunes, where its code is, the
# server its trials run on.
SPEC_ATTR, PATHS_ATTR, SERVER_ATTR = "elastrain_spec", "elastrain_code_paths", "elastrain_server"
JOB_ATTR, INTERRUPTED_ATTR = "job_id", "interrupted"


class TrialStatus(StrEnum):
    """Where a trial of a study is, as the study's table and progress show it (Optuna's own
    `TrialState` is what the study stores)."""

    COMPLETE = "complete"   # its job succeeded with the study's metric, told to Optuna
    PRUNED = "pruned"       # stopped early by the pruner
    FAILED = "failed"       # its job failed, could not run, or ended without the metric
    RUNNING = "running"     # not ended when the study's table was made
    STOPPED = "stopped"     # cancelled when the study's budget ran out (not counted as a trial)


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study.

    Attributes:
        number: Optuna's trial number (0-based, in the order trials were asked for).
        state: COMPLETE, PRUNED, FAILED (the job failed or could not run), or RUNNING; STOPPED
            only in what the progress is told (a stopped trial is left out of the table).
        value: the study's metric at the trial's end (complete) or at its last epoch (pruned).
        params: the spec fields the trial set, by dotted path.
        job_id: the trial's job (its run folder, events and model).
        epochs: epochs it trained.
        message: why it failed.
    """

    number: int
    state: TrialStatus
    value: float | None
    params: dict[str, Any]
    job_id: str | None
    epochs: int = 0
    message: str | None = None


@dataclass(frozen=True)
class StudyResult:
    """How a study ended.

    Attributes:
        study: its name (what `elastrain tune --resume` takes).
        metric: the validation metric compared; `maximize`: its direction.
        best_value / best_params / best_job: the best complete trial's (None / {} when none completed).
        best_model: the best trial's model as registered, "NAME vVERSION" (None when none completed).
        best_model_path: where that model is saved (what `elastrain.load_model` takes).
        trials / pruned / failed: trials finished in all (complete, pruned or failed), and of them pruned, failed.
        wall_s: seconds this run of the study took (a resumed study counts from its resume).
        worker_s: worker-seconds its trials held in this run.
        stopped_by: n_trials, or the budget that ended it (wall_s, worker_s, cost).
        table: every trial, by number.
        plots: PNG files drawn (optimization history, parallel coordinates, parameter importances).
    """

    study: str
    metric: str
    maximize: bool
    best_value: float | None
    best_params: dict[str, Any]
    best_job: str | None
    best_model: str | None
    best_model_path: str | None
    trials: int
    pruned: int
    failed: int
    wall_s: float
    worker_s: float
    stopped_by: str
    table: tuple[TrialRecord, ...] = ()
    plots: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """What `elastrain tune --json` prints: study, best_value, best_params, best_model,
        trials, pruned, wall_s (and the rest of the scalars)."""
        return {key: value for key, value in asdict(self).items() if key not in ("table",)}


class StudyProgress(Protocol):
    """Receives what a study does (the CLI prints it)."""

    def trial_started(self, number: int, params: dict[str, Any], workers: int) -> None: ...
    def trial_resized(self, number: int, workers: int) -> None: ...
    def trial_ended(self, record: TrialRecord, finished: int, best: float | None) -> None: ...


@dataclass
class _Active:
    """A trial the study is running."""

    trial: optuna.Trial
    handle: JobHandle
    params: dict[str, Any]
    workers: int
    spec: JobSpec
    gate: OptunaPruneGate
    epoch: int = 0
    since: float = 0.0
    stopping: str | None = None   # the budget that cancelled it
    pruning: bool = False         # the tuner cancelled it for the pruner (a server's trial)


@dataclass
class _Tally:
    finished: int = 0
    worker_s: float = 0.0
    stopped_by: str | None = None


class Study:
    """A hyperparameter study over a job (see the module docstring).

    Args:
        spec: the job (a dict in the YAML's shape, or a JobSpec) with its `tune:` section.
        overrides: fields to set first, by dotted path (as `elastrain.Job` takes them).
        tune: the study's settings, replacing the spec's `tune:` section.
        name: the study's name (default: the job's name and the time).
        storage: the database URL (default: the jobs' database, ELASTRAIN_DB_URL or the SQLite file
            under ELASTRAIN_HOME).
        home: where trials' run folders go (default ELASTRAIN_HOME or ~/.elastrain).
        server: run the trials as jobs of this `elastrain server` (its URL) instead of from this
            process, as user `token` (default $ELASTRAIN_TOKEN); an https server's certificate is
            checked against `ca_cert` (default $ELASTRAIN_CA_CERT), as `Job.submit` does.

    Raises:
        UserError: the spec, the tune section or its search space is not valid (exit 2), e.g. a
            space that names a field the spec does not have (the message names the nearest one);
            a server without a token.
    """

    def __init__(self, spec: Mapping[str, Any] | JobSpec, overrides: Mapping[str, Any] | list[str] | None = None, *,
                 tune: Mapping[str, Any] | TuneSpec | None = None, name: str | None = None,
                 storage: str | None = None, home: str | Path | None = None, server: str | None = None,
                 token: str | None = None, ca_cert: str | Path | None = None,
                 source: str = "elastrain.Study") -> None:
        from elastrain.sdk import Job

        job = Job(spec, overrides)
        if tune is not None:
            tuned = tune if isinstance(tune, TuneSpec) else TuneSpec.model_validate(dict(tune))
            job.spec = job.spec.model_copy(update={"tune": tuned})
        if job.spec.tune is None:
            raise UserError("the spec has no `tune:` section", where=source,
                            fix="add one (see examples/tune_mlp_digits.yaml) or pass tune=...")
        check_space(job.spec, job.spec.tune, source)
        self.spec: JobSpec = job.spec
        self.tune: TuneSpec = job.spec.tune
        self.code_paths: list[str] = []
        self.name = name or f"{self.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        self.storage = storage
        self.home = Path(home) if home else paths.home()
        self.metric = self.tune.metric if self.tune.metric != "auto" else DEFAULT_METRIC[self.spec.task]
        self.maximize = self.tune.maximize(self.metric)
        self.n_trials = min(self.tune.n_trials, grid_size(self.tune) or self.tune.n_trials)
        self.server = server
        self._remote: Remote | None = None
        if server:
            from elastrain.client import Remote
            from elastrain.security.transport import CA_CERT_ENV

            self._remote = Remote(server, token or os.environ.get("ELASTRAIN_TOKEN"),
                                  ca_cert or os.environ.get(CA_CERT_ENV))
        self._runner: TrialRunner | None = None   # how trials run, while optimize() runs
        self._storage_url = ""                    # the study's database, once optimize() runs

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None, **kwargs: Any) -> Study:
        """The study a YAML spec's `tune:` section declares; data paths and `python:` models are
        found beside the file (see `Study` for the keyword arguments).

        Raises:
            UserError: the file is missing, or the spec or its tune section is not valid.
        """
        spec = load_spec(path, overrides)
        study = cls(spec, source=str(path), **kwargs)
        study.code_paths = [str(Path(path).resolve().parent)]
        return study

    @classmethod
    def resume(cls, name: str, storage: str | None = None, home: str | Path | None = None,
               server: str | None = None, token: str | None = None, ca_cert: str | Path | None = None) -> Study:
        """The stored study `name`, to continue with :meth:`optimize`: finished trials are kept,
        trials its dead tuner left running are run again with the same parameters (on the server
        it ran on, unless `server` names another; see `Study` for the other arguments).

        Raises:
            UserError: there is no such study in the database.
        """
        import optuna

        from elastrain.tune.optuna_setup import storage_url

        url = storage_url(storage)
        try:
            stored = optuna.load_study(study_name=name, storage=url)
        except KeyError:
            known = optuna.get_all_study_names(storage=url)
            raise UserError(f"no study '{name}' in the database", where=_shown(url),
                            fix=f"known studies: {', '.join(known[-5:])}" if known else "start one with "
                                "`elastrain tune SPEC`") from None
        study = cls(validate_spec(json.loads(stored.user_attrs[SPEC_ATTR]), f"study {name}"), name=name,
                    storage=storage, home=home, server=server or stored.user_attrs.get(SERVER_ATTR), token=token,
                    ca_cert=ca_cert, source=f"study {name}")
        study.code_paths = list(stored.user_attrs.get(PATHS_ATTR, []))
        return study

    def optimize(self, progress: StudyProgress | None = None, plots: str | Path | None = None) -> StudyResult:
        """Run trials until `tune.n_trials` have finished or a budget is spent, then register the
        best trial's model and draw the plots (into `plots`, default the study's folder under home).

        Returns:
            The result (also when a budget stopped the study early).

        Raises:
            UserError: the database cannot be reached, Ray cannot start, or the server cannot be
                reached or refuses a trial.
        """
        import optuna

        from elastrain.tune.optuna_setup import make_pruner, make_sampler, storage_url

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = self._storage_url = storage_url(self.storage)
        study = optuna.create_study(study_name=self.name, storage=url, load_if_exists=True,
                                    direction="maximize" if self.maximize else "minimize",
                                    pruner=make_pruner(self.tune, self._max_epochs()))
        study.sampler = make_sampler(self.tune, asked=len(study.get_trials(deepcopy=False)))
        study.set_user_attr(SPEC_ATTR, json.dumps(self.spec.model_dump(mode="json")))
        study.set_user_attr(PATHS_ATTR, self.code_paths)
        study.set_user_attr(SERVER_ATTR, self.server)
        self._runner = runner = (ServerTrials(self._remote, self.code_paths) if self._remote else
                                 PoolTrials(self.spec, self.home, self.code_paths, self.storage))
        tally = _Tally(finished=self._take_over(study))
        started = time.time()
        runner.open()
        try:
            self._run(study, tally, started, progress)
        finally:
            runner.close()
        return self._result(study, tally, time.time() - started, plots)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self, study: optuna.Study, tally: _Tally, started: float, progress: StudyProgress | None) -> None:
        runner = self._runner
        resources = self.spec.resources
        poll_s = POLL_S if runner.gated else SERVER_POLL_S
        active: dict[int, _Active] = {}
        last = time.monotonic()
        while True:
            now = time.monotonic()
            tally.worker_s += sum(a.workers for a in active.values()) * (now - last)
            last = now
            for number in list(active):
                if self._follow(study, active[number], tally, progress):
                    del active[number]
                    continue
                held = runner.workers(active[number].handle, active[number].workers)
                if held != active[number].workers:
                    active[number].workers = held
                    if progress and held:
                        progress.trial_resized(number, held)
            tally.stopped_by = tally.stopped_by or self._spent(tally, time.time() - started)
            if tally.stopped_by:
                for run in active.values():
                    if run.stopping is None:
                        run.stopping = tally.stopped_by
                        run.handle.cancel()
                if not active:
                    return
            elif tally.finished + len(active) >= self.n_trials and not active:
                tally.stopped_by = "n_trials"
                return
            else:
                may_start = self.n_trials - tally.finished - len(active)
                if self.tune.max_concurrent is not None:
                    may_start = min(may_start, self.tune.max_concurrent - len(active))
                running = [RunningTrial(run.handle.job_id, number, resources.workers.min, resources.workers.max,
                                        run.workers) for number, run in active.items()]
                plan = runner.plan(running, max(0, may_start), now)
                for number, run in active.items():
                    workers = plan.resize.get(run.handle.job_id)
                    if workers is not None and self._resize(run, workers) and progress:
                        progress.trial_resized(number, workers)
                for workers in plan.start:
                    run = self._start(study, workers)
                    active[run.trial.number] = run
                    if progress:
                        progress.trial_started(run.trial.number, run.params, workers)
            time.sleep(poll_s)

    def _start(self, study: optuna.Study, workers: int) -> _Active:
        import optuna

        from elastrain.sdk import Job

        trial = study.ask()
        params = suggest(trial, self.tune.space)
        raw = self.spec.model_dump(mode="json", exclude={"tune"})
        if self._runner.gated:   # a server registers each trial's model under the job's name: keep it
            raw["name"] = f"{self.spec.name}-t{trial.number}"
        job = Job(raw, params)
        gate = OptunaPruneGate(self._storage_url, self.name, trial._trial_id, self.metric,
                               self.tune.model_dump_json(), self._max_epochs())
        try:
            handle = self._runner.launch(job.spec, f"{_job_safe(self.name)}-t{trial.number}-{os.urandom(2).hex()}",
                                         workers, gate)
        except UserError as exc:
            trial.set_user_attr("message", exc.line())
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        trial.set_user_attr(JOB_ATTR, handle.job_id)
        return _Active(trial, handle, params, workers, job.spec, gate)

    @staticmethod
    def _resize(run: _Active, workers: int) -> bool:
        if run.stopping:
            return False
        try:
            run.handle.scale(workers)
        except UserError:   # it has just ended: the next pass frees its workers
            return False
        run.workers = workers
        return True

    def _follow(self, study: optuna.Study, run: _Active, tally: _Tally, progress: StudyProgress | None) -> bool:
        """Record the trial if it has ended (its rank-0 worker reported each epoch to Optuna and
        stopped it when pruned, see `OptunaPruneGate`). Whether it has."""
        import optuna

        ended = run.handle.wait(0)
        for point in sorted(run.handle.metrics(run.since).get(self.metric, []), key=lambda p: p["epoch"]):
            run.since, run.epoch = max(run.since, point["t"]), max(run.epoch, point["epoch"])
            if not (self._runner.gated or run.pruning or ended or run.stopping) and \
                    run.gate(point["epoch"], {self.metric.removeprefix("val_"): float(point["value"])}):
                run.pruning = True
                _cancel(run.handle)
        if not ended:
            return False
        message = None
        try:
            result = run.handle.result(0)
            run.epoch = max(run.epoch, result.epochs)   # its last epoch may not have been read yet
        except UserError as exc:
            result, message = None, exc.line()
        if run.stopping is not None and not (result and result.status is JobState.SUCCEEDED):
            run.trial.set_user_attr(INTERRUPTED_ATTR, run.stopping)
            study.tell(run.trial, state=optuna.trial.TrialState.FAIL)
            state, value = TrialStatus.STOPPED, None
        elif run.pruning or (self._runner.gated and result is not None and result.status is JobState.CANCELLED):
            state, value = TrialStatus.PRUNED, study.tell(run.trial, state=optuna.trial.TrialState.PRUNED).value
        elif result is not None and result.status is JobState.SUCCEEDED and self.metric in result.metrics:
            value = result.metrics[self.metric]
            study.tell(run.trial, value)
            state = TrialStatus.COMPLETE
        else:
            cancelled = result is not None and result.status is JobState.CANCELLED
            message = message or (result.message if result else None) or (
                "its job was cancelled outside the study" if cancelled else "the trial ended without its metric")
            run.trial.set_user_attr("message", message)
            study.tell(run.trial, state=optuna.trial.TrialState.FAIL)
            state, value = TrialStatus.FAILED, None
        record = TrialRecord(run.trial.number, state, value, run.params, run.handle.job_id, run.epoch, message)
        if state is not TrialStatus.STOPPED:
            tally.finished += 1
        if progress:
            progress.trial_ended(record, tally.finished, _best(study))
        return True

    def _spent(self, tally: _Tally, wall_s: float) -> str | None:
        budget = self.tune.budget
        if budget.wall_s is not None and wall_s >= budget.wall_s:
            return "wall_s"
        if budget.worker_s is not None and tally.worker_s >= budget.worker_s:
            return "worker_s"
        if budget.cost is not None and tally.worker_s / 3600 * budget.price_per_worker_hour >= budget.cost:
            return "cost"
        return None

    def _take_over(self, study: optuna.Study) -> int:
        """Trials a dead tuner left running are failed and asked again with the same parameters;
        the number of trials already finished."""
        import optuna

        finished = 0
        for trial in study.get_trials(deepcopy=False):
            if trial.state == optuna.trial.TrialState.RUNNING:
                if JOB_ATTR in trial.user_attrs:
                    self._runner.abandon(trial.user_attrs[JOB_ATTR])
                optuna.Trial(study, trial._trial_id).set_user_attr(INTERRUPTED_ATTR, "tuner died")
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
                study.enqueue_trial(trial.params, skip_if_exists=False)
            elif trial.state.is_finished() and INTERRUPTED_ATTR not in trial.user_attrs:
                finished += 1
        return finished

    def _max_epochs(self) -> int:
        return self.spec.epochs_at_most

    # -- the end -------------------------------------------------------------------------------

    def _result(self, study: optuna.Study, tally: _Tally, wall_s: float, plots: str | Path | None) -> StudyResult:
        import optuna

        table = []
        for trial in study.get_trials(deepcopy=False):
            if INTERRUPTED_ATTR in trial.user_attrs:
                continue
            state = {optuna.trial.TrialState.COMPLETE: TrialStatus.COMPLETE,
                     optuna.trial.TrialState.PRUNED: TrialStatus.PRUNED,
                     optuna.trial.TrialState.FAIL: TrialStatus.FAILED}.get(trial.state, TrialStatus.RUNNING)
            table.append(TrialRecord(trial.number, state, trial.value, trial_overrides(trial.params, self.tune.space),
                                     trial.user_attrs.get(JOB_ATTR), max(trial.intermediate_values, default=0),
                                     trial.user_attrs.get("message")))
        best = _best_trial(study)
        best_job = best.user_attrs.get(JOB_ATTR) if best else None
        model, model_path = self._runner.model_of(best_job, self.spec) if best_job else (None, None)
        from elastrain.tune.report import draw_plots

        folder = Path(plots) if plots else self.home / "studies" / _job_safe(self.name)
        drawn = draw_plots(study, folder, self.metric)
        return StudyResult(
            study=self.name, metric=self.metric, maximize=self.maximize,
            best_value=best.value if best else None,
            best_params=trial_overrides(best.params, self.tune.space) if best else {},
            best_job=best_job, best_model=model, best_model_path=model_path,
            trials=sum(r.state is not TrialStatus.RUNNING for r in table),
            pruned=sum(r.state is TrialStatus.PRUNED for r in table),
            failed=sum(r.state is TrialStatus.FAILED for r in table), wall_s=round(wall_s, 3),
            worker_s=round(tally.worker_s, 3), stopped_by=tally.stopped_by or "n_trials", table=tuple(table),
            plots=tuple(str(path) for path in drawn))


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    return study.best_trial


def _best(study: optuna.Study) -> float | None:
    best = _best_trial(study)
    return best.value if best else None


def _cancel(handle: JobHandle) -> None:
    with contextlib.suppress(UserError):   # it has just ended: its end is read on the next pass
        handle.cancel()


def _job_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)

