"""Hyperparameter studies: trials are elastic jobs on real Ray workers, the study lives in a real
SQLite (or PostgreSQL) database through Optuna's storage, and a pruned trial's workers go to the
survivors in place."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass

import optuna
import pytest
import yaml

from elastrain.client import Remote
from elastrain.data import prepare_dataset
from elastrain.elastic.job import RunOptions, run_job
from elastrain.runs import RunFolder
from elastrain.scheduler.policy import FifoPacking
from elastrain.spec import validate_spec
from elastrain.spec.tune import TuneSpec
from elastrain.train.trainer import Trainer
from elastrain.tune.allocate import RunningTrial, TrialPlan, plan_trials
from elastrain.tune.optuna_setup import grid_size, make_pruner, make_sampler
from elastrain.tune.space import suggest
from elastrain.tune.study import Study
from tests.conftest import REPO, wait_until

EXAMPLE = REPO / "examples" / "tune_mlp_digits.yaml"
PG_URL = os.environ.get("ELASTRAIN_TEST_PG_URL")


def small_job(**tune):
    return {"name": "tiny", "data": {"source": "builtin:digits", "validation_fraction": 0.2},
            "model": {"kind": "mlp", "hidden": [32]},
            "train": {"optimizer": "adam", "lr": 0.003, "batch_size": 128, "epochs": 3, "seed": 0},
            "resources": {"workers": {"min": 1, "max": 2}, "cpus_per_worker": 1},
            "tune": {"space": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}, **tune}}


def test_the_example_study_runs_from_the_cli(cli, ray_address, elastrain_home):
    code, out, err = cli("tune", EXAMPLE, "--set", "tune.n_trials=4", "--set", "train.epochs=3", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert {"study", "best_value", "best_params", "best_model", "trials", "pruned", "wall_s"} <= set(summary)
    assert summary["trials"] == 4 and summary["best_value"] > 0.8
    assert set(summary["best_params"]) <= {"train.lr", "train.batch_size", "model.hidden", "model.activation"}
    assert summary["best_model"].startswith("tune-digits-mlp v")
    assert {os.path.basename(p) for p in summary["plots"]} >= {"optimization_history.png", "parallel_coordinate.png"}
    stored = optuna.load_study(study_name=summary["study"], storage=f"sqlite:///{elastrain_home / 'elastrain.db'}")
    finished = [t for t in stored.trials if t.state.is_finished()]
    assert len(finished) == 4 and stored.best_value == summary["best_value"]
    best_job = summary["best_job"]
    assert RunFolder.of(elastrain_home, best_job).read_result()["metrics"]["val_accuracy"] == summary["best_value"]


def test_a_pruned_trial_hands_its_workers_to_the_survivor_in_place(ray_address, elastrain_home):
    """Two trials share two workers (the test's Ray has 6 CPUs, each worker takes 3). The slow, bad one
    (tiny learning rate, batch 8) reaches ASHA's first rung after the good one and is pruned; the
    good one then grows from 1 to 2 workers in place (a scale_out event, no restart)."""
    job = small_job(n_trials=2, sampler="grid", pruner="asha", min_epochs=1, reduction_factor=2)
    job["train"]["epochs"] = 150
    job["resources"]["cpus_per_worker"] = 3
    job["tune"]["space"] = {
        "train.lr": {"type": "categorical", "choices": [0.003, 1.0e-7]},
        "train.batch_size": {"type": "categorical", "choices": [8], "when": {"train.lr": 1.0e-7}},
    }
    result = Study(job, name="handover").optimize()
    by_lr = {record.params["train.lr"]: record for record in result.table}
    pruned, survivor = by_lr[1.0e-7], by_lr[0.003]
    assert pruned.state == "pruned" and survivor.state == "complete"
    assert pruned.params == {"train.lr": 1.0e-7, "train.batch_size": 8}   # the conditional parameter was sampled
    assert survivor.params == {"train.lr": 0.003}                         # and only there
    pruned_end = next(e for e in RunFolder.of(elastrain_home, pruned.job_id).read_events() if e["kind"] == "cancelled")
    events = RunFolder.of(elastrain_home, survivor.job_id).read_events()
    assert [e["kind"] for e in events if e["kind"] in ("start", "resume")] == ["start"]   # never restarted
    grown = [e for e in events if e["kind"] == "scale_out"]
    assert grown and grown[0]["workers"] == 2 and grown[0]["t"] >= pruned_end["t"], events
    assert result.best_job == survivor.job_id and result.trials == 2 and result.pruned == 1


def test_a_study_runs_its_trials_as_jobs_of_a_server(cli, server, tmp_path):
    url, tokens = server
    job = small_job(n_trials=3, sampler="random")
    job["train"]["epochs"] = 2
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(job))
    code, out, err = cli("tune", spec, "--server", url, "--token", tokens["ada"], "--name", "served", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    remote = Remote(url, tokens["ada"])
    jobs = {j["job_id"]: j for j in remote.call("GET", "/jobs")["jobs"]}
    assert summary["trials"] == 3 and len(jobs) == 3 and summary["best_job"] in jobs
    assert {j["status"] for j in jobs.values()} == {"succeeded"}
    assert jobs[summary["best_job"]]["metrics"]["val_accuracy"] == summary["best_value"]
    models = {m["job_id"]: f"{m['name']} v{m['version']}" for m in remote.call("GET", "/models")}
    assert set(models) == set(jobs) and summary["best_model"] == models[summary["best_job"]]
    assert "queued on the server" in err


@dataclass
class CancelOnceGrown:
    """Study progress that, once the pruned trial has ended and the survivor has grown to 2
    workers, cancels the survivor through the server (it would otherwise train for half an hour)."""

    remote: Remote
    grown: dict | None = None

    def trial_started(self, number, params, workers):
        assert workers == 0   # queued: the server sizes it

    def trial_resized(self, number, workers):
        pass

    def trial_ended(self, record, finished, best):
        if record.state != "pruned":
            return
        pruned_end = next(e["t"] for e in self.remote.call("GET", f"/jobs/{record.job_id}/events")
                          if e["kind"] == "cancelled")
        (survivor,) = self.remote.call("GET", "/jobs", params={"status": "running"})["jobs"]

        def grown():
            events = self.remote.call("GET", f"/jobs/{survivor['job_id']}/events")
            self.grown = next((e for e in events if e["kind"] == "scale_out" and e["t"] >= pruned_end), None)
            return self.grown is not None

        wait_until(grown, timeout=60, poll=0.1)
        self.remote.call("POST", f"/jobs/{survivor['job_id']}/cancel")


def test_on_a_server_a_pruned_trial_is_cancelled_and_its_worker_goes_to_the_survivor(server):
    """Two trials on a real server (2 CPUs, FIFO): the good one starts first on both workers and
    shrinks to one when the bad one (tiny learning rate) is admitted; the tuner reports the bad
    one's first epoch to ASHA, which prunes it, and cancels its job; the server's scheduler then
    gives its worker back to the survivor, which grows in place (no restart)."""
    url, tokens = server
    job = small_job(n_trials=2, sampler="grid", pruner="asha", min_epochs=1, reduction_factor=2, seed=1)
    job["train"]["epochs"] = 100_000
    job["tune"]["space"] = {
        "train.lr": {"type": "categorical", "choices": [0.003, 1.0e-7]},
        "train.batch_size": {"type": "categorical", "choices": [8], "when": {"train.lr": 1.0e-7}},
    }
    remote = Remote(url, tokens["ada"])
    progress = CancelOnceGrown(remote)
    result = Study(job, name="handover-on-server", server=url, token=tokens["ada"]).optimize(progress)
    by_lr = {record.params["train.lr"]: record for record in result.table}
    pruned, survivor = by_lr[1.0e-7], by_lr[0.003]
    # Pruned at the first rung where the survivor had a value (which rung depends on how far the survivor
    # had got when this trial started: not asserted).
    assert pruned.number == 1 and pruned.state == "pruned"
    assert remote.call("GET", f"/jobs/{pruned.job_id}")["status"] == "cancelled"
    assert progress.grown is not None and progress.grown["workers"] == 2
    events = remote.call("GET", f"/jobs/{survivor.job_id}/events")
    assert [e["kind"] for e in events if e["kind"] in ("start", "resume")] == ["start"]   # never restarted
    assert survivor.state == "failed" and "cancelled" in survivor.message   # by the test, not by the pruner
    assert result.best_model is None


def test_the_study_starts_trials_at_their_minimum_and_gives_freed_workers_to_the_running():
    policy = FifoPacking()
    assert plan_trials(policy, 4, [], 5, 1, 2, 1.0) == TrialPlan({}, (1, 1, 1, 1))
    alone = [RunningTrial("a", 0, 1, 2, 1)]
    assert plan_trials(policy, 4, alone, 0, 1, 2, 1.0) == TrialPlan({"a": 2}, ())        # grows in place
    assert plan_trials(policy, 4, alone, 1, 1, 2, 1.0) == TrialPlan({"a": 2}, (2,))      # and one starts
    assert plan_trials(policy, 6, alone, 1, 1, 2, 3.0) == TrialPlan({}, (1,))            # 3 slots a worker
    assert plan_trials(policy, 6, alone, 0, 1, 2, 3.0) == TrialPlan({"a": 2}, ())


@dataclass
class StopAfter:
    """An epoch gate that stops the job after epoch `epoch`."""

    epoch: int

    def __call__(self, epoch: int, metrics: dict) -> bool:
        assert isinstance(metrics["accuracy"], float)
        return epoch >= self.epoch


@pytest.mark.parametrize("workers", [1, 2])
def test_an_epoch_gate_stops_the_job_where_it_says_every_worker_at_one_step(workers, ray_address, elastrain_home):
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray's workers cannot import tests/
    spec = validate_spec(small_job())
    spec.train.epochs = 6
    spec.resources.workers.min = spec.resources.workers.max = workers
    steps_per_epoch = Trainer(spec, prepare_dataset(spec)).steps_per_epoch
    result = run_job(spec, elastrain_home, options=RunOptions(gate=StopAfter(2), on_ray=workers > 1))
    assert result.status == "cancelled" and result.epochs == 2
    assert result.steps == 2 * steps_per_epoch + 1   # the pause signal rides on the next step
    history = RunFolder(elastrain_home / "runs" / result.job_id).read_history()
    assert [record["epoch"] for record in history] == [1, 2]


def test_a_budget_stops_the_study(ray_address, elastrain_home):
    job = small_job(n_trials=500, budget={"worker_s": 8})
    job["train"]["epochs"] = 5
    result = Study(job, name="budget").optimize()
    assert result.stopped_by == "worker_s"
    assert result.trials < 500 and result.worker_s >= 8
    stored = optuna.load_study(study_name="budget", storage=f"sqlite:///{elastrain_home / 'elastrain.db'}")
    assert not [t for t in stored.trials if t.state == optuna.trial.TrialState.RUNNING]
    stopped = [t for t in stored.trials if t.user_attrs.get("interrupted") == "worker_s"]
    assert stopped and len(stopped) + result.trials == len(stored.trials)   # the budget cancelled the rest


def test_resume_after_sigkill_repeats_no_finished_trial(ray_address, elastrain_home, tmp_path, cli):
    job = small_job(n_trials=4, max_concurrent=1)   # 2 end before the kill, 2 after the resume
    job["train"]["epochs"] = 2
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(job))
    storage = f"sqlite:///{elastrain_home / 'elastrain.db'}"
    env = {**os.environ, "RAY_ADDRESS": ray_address, "ELASTRAIN_HOME": str(elastrain_home)}
    tuner = subprocess.Popen([sys.executable, "-m", "elastrain", "tune", str(spec), "--name", "killed"],
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ended_trials():   # read from the run folders, not the database the tuner is writing
        runs = elastrain_home / "runs"
        return [f for f in runs.iterdir() if RunFolder(f).read_result() is not None] if runs.is_dir() else []

    try:
        wait_until(lambda: len(ended_trials()) >= 2 or tuner.poll() is not None, timeout=240, poll=0.2)
    finally:
        tuner.send_signal(signal.SIGKILL)
        tuner.wait()
    finished = [t for t in optuna.load_study(study_name="killed", storage=storage).trials if t.state.is_finished()]
    before = {t.number: (t.state, t.value, t.user_attrs["job_id"]) for t in finished}
    assert 1 <= len(before) < 4   # the second trial to end may not have been told yet
    code, out, err = cli("tune", "--resume", "killed", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["trials"] == 4
    after = optuna.load_study(study_name="killed", storage=storage).trials
    done = [t for t in after if t.state.is_finished() and "interrupted" not in t.user_attrs]
    assert len(done) == 4
    assert {t.number: (t.state, t.value, t.user_attrs["job_id"]) for t in done if t.number in before} == before
    # The resumed study draws new parameters: its seeded sampler does not start over.
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == 4
    interrupted = [t for t in after if "interrupted" in t.user_attrs]
    for trial in interrupted:   # run again, with the parameters it had, as a later trial (a tuner killed
        # between asking a trial and drawing its parameters leaves it with none)
        assert any(trial.params.items() <= t.params.items() and t.number > trial.number for t in done)


def test_a_conditional_space_samples_only_valid_combinations():
    tune = TuneSpec.model_validate({"space": {
        "train.optimizer": {"type": "categorical", "choices": ["adam", "momentum", "sgd"]},
        "train.momentum": {"type": "float", "low": 0.5, "high": 0.99, "when": {"train.optimizer": "momentum"}},
        "train.betas": {"type": "categorical", "choices": [[0.9, 0.999], [0.8, 0.99]],
                        "when": {"train.optimizer": "adam"}},
        "model.hidden": {"type": "categorical", "choices": [[32], [64, 32]]},
    }})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        params = suggest(study.ask(), tune.space)
        optimizer = params["train.optimizer"]
        seen.add(optimizer)
        assert ("train.momentum" in params) == (optimizer == "momentum")
        assert ("train.betas" in params) == (optimizer == "adam")
        raw = {"data": {"source": "builtin:digits"}, "train": {}, "model": {}}
        for path, value in params.items():
            section, name = path.split(".")
            raw[section][name] = value
        validate_spec(raw)
    assert seen == {"adam", "momentum", "sgd"}


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes", "gp"])
def test_every_sampler_samples_the_space_it_is_given(sampler):
    tune = TuneSpec.model_validate({"sampler": sampler, "seed": 3, "space": {
        "train.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "train.batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
        "model.activation": {"type": "categorical", "choices": ["relu", "tanh"]},
    }})
    study = optuna.create_study(sampler=make_sampler(tune), direction="maximize")
    seen = []
    for _ in range(min(12, grid_size(tune) or 12)):
        trial = study.ask()
        params = suggest(trial, tune.space)
        assert 1e-4 <= params["train.lr"] <= 1e-1 and params["train.batch_size"] in (16, 32, 48, 64)
        assert params["model.activation"] in ("relu", "tanh")
        study.tell(trial, -abs(params["train.lr"] - 0.01))
        seen.append(tuple(params.values()))
    assert len(set(seen)) == len(seen)   # no point asked twice
    assert study.best_value > -0.1


@pytest.mark.parametrize("pruner", ["asha", "hyperband", "median"])
def test_every_pruner_stops_a_trial_far_behind_the_others(pruner):
    """Hyperband puts each trial in a bracket by a hash of the study's name and the trial's number
    (some brackets judge a trial first at its last epoch), so the study has a fixed name."""
    tune = TuneSpec.model_validate({"pruner": pruner, "min_epochs": 1, "reduction_factor": 2,
                                    "space": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-1}}})
    study = optuna.create_study(study_name="pruners", direction="maximize", pruner=make_pruner(tune, max_epochs=8),
                                sampler=make_sampler(tune))
    for i in range(8):   # good trials, each a little better than the one before, run to the end
        trial = study.ask()
        for epoch in range(1, 9):
            trial.report(0.9 + epoch / 100 + i / 1000, epoch)
            assert not trial.should_prune()
        study.tell(trial, 0.98 + i / 1000)
    pruned_at = []
    for _ in range(3):   # bad ones
        bad = study.ask()
        for epoch in range(1, 9):
            bad.report(0.1, epoch)
            if bad.should_prune():
                pruned_at.append(epoch)
                study.tell(bad, state=optuna.trial.TrialState.PRUNED)
                break
    assert len(pruned_at) == 3 and min(pruned_at) <= 2, pruned_at
    assert not make_pruner(tune.model_copy(update={"pruner": "none"}), 8).prune(study, study.trials[-1])


@pytest.mark.parametrize(("space", "message"), [
    ({"train.lrr": {"type": "float", "low": 0.001, "high": 0.1}}, "did you mean 'train.lr'?"),
    ({"model.activaton": {"type": "categorical", "choices": ["relu"]}}, "did you mean 'model.activation'?"),
    ({"trian.lr": {"type": "float", "low": 0.001, "high": 0.1}}, "did you mean 'train'?"),
    ({"model.activation": {"type": "categorical", "choices": ["relu", "swish"]}}, "the value 'swish' makes an invalid"),
    ({"train.lr": {"type": "float", "low": 0.1, "high": 0.001}}, "low (0.1) is above high (0.001)"),
])
def test_a_space_naming_a_field_that_does_not_exist_is_exit_2(cli, tmp_path, space, message):
    job = small_job()
    job["tune"]["space"] = space
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(job))
    code, _, err = cli("tune", spec)
    assert code == 2 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL tests skipped: set ELASTRAIN_TEST_PG_URL (e.g. "
                                       "postgresql+psycopg://postgres@127.0.0.1:5432/test) to run them")
def test_a_study_is_stored_in_postgresql(ray_address, elastrain_home):
    import secrets

    from sqlalchemy import create_engine, text

    name = f"elastrain_tune_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        result = Study(small_job(n_trials=2), name="on-pg", storage=url).optimize()
        assert result.trials == 2 and result.best_model == "tiny v1"
        stored = optuna.load_study(study_name="on-pg", storage=url)
        assert stored.best_value == result.best_value
        assert Study.resume("on-pg", storage=url).optimize().trials == 2   # nothing left to run
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()
