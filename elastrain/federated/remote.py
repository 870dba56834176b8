"""A federated job's client: it joins the job on a server, trains the rounds it is asked to on rows
it keeps, and sends only its updates.

The rows are read and preprocessed here with the job's own reader and the server's fitted
preprocessing (the same scaling and categories as the server's validation rows); they must have
exactly the job's columns. Each round it fetches the global weights, trains them with the job's
model, optimizer and trainer (`client.local_update`), sends a heartbeat meanwhile, and PUTs the
difference; under secure aggregation it runs the protocol of `federated.secagg` with the round's
other clients through the server and sends its update masked. What it sends: its join, polls,
heartbeats, the protocol's keys and shares, and its updates; never a row.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np

from elastrain.client import Remote, detail_of
from elastrain.data.dataset import Dataset, encode_target
from elastrain.data.preprocess import Preprocessor
from elastrain.data.sources import read_source
from elastrain.errors import UserError
from elastrain.federated.client import local_update
from elastrain.federated.coordinator import FLOAT64, UINT64
from elastrain.federated.secagg import (
    SecAggClient,
    advertised_from,
    advertised_json,
    secured_input,
    shared_from,
    shared_json,
    unmasking_json,
)
from elastrain.federated.strategy import ClientUpdate
from elastrain.spec import JobSpec

# Between two tries to join a job that is not running yet (or still reading its data).
JOIN_RETRY_S = 2.0


def local_rows(spec: JobSpec, setup: dict, path: Path) -> Dataset:
    """The client's rows at `path` (a table in the job's format) as a training set, preprocessed as
    the server's rows were.

    Raises:
        UserError: the file cannot be read, its columns are not the job's (naming those missing and
            those it should not have), or it holds a class or category the job does not know.
    """
    preprocessor = Preprocessor(**{**setup["preprocessor"], "input_shape": tuple(setup["preprocessor"]["input_shape"])})
    if preprocessor.layout != "table":
        raise UserError("this job's data are arrays (images), which a client cannot give as a table yet",
                        where=str(path), fix="train a federated job on tabular data")
    data = spec.data.model_copy(update={"source": f"{spec.data.source_kind}:{path.resolve()}"})
    raw = read_source(data, spec.train.seed)
    expected, given = set(preprocessor.columns), set(raw.frame.columns)
    if given != expected:
        missing, extra = sorted(expected - given), sorted(given - expected)
        said = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                           f"not in the job: {', '.join(extra)}" if extra else "") if part)
        raise UserError(f"the columns are not the job's ({said})", where=str(path),
                        fix=f"give exactly {', '.join(preprocessor.columns)} and the target {spec.data.target}")
    x = preprocessor.transform_frame(raw.frame, str(path), raw.line_offset)
    y = encode_target(raw.target, setup["task"], preprocessor.classes, str(path), spec.data.target, raw.line_offset)
    return Dataset(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0], task=setup["task"], n_classes=setup["n_classes"],
                   input_shape=tuple(preprocessor.input_shape), preprocessor=preprocessor)


class FederatedClient:
    """A client of federated job `job_id` on the server `remote` reaches, training on the rows of
    the table at `data`.

    Args:
        wait_s: how long to keep trying to join a job that is queued or still starting.
        on_round: called with (round, rows, seconds) after each round this client reported.
        on_wait: called once with the server's reason when the job cannot be joined yet.
    """

    def __init__(self, remote: Remote, job_id: str, data: Path, wait_s: float = 600.0,
                 on_round: Callable[[int, int, float], None] | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.remote, self.job_id, self.data_path, self.wait_s, self.on_round = remote, job_id, data, wait_s, on_round
        self.on_wait = on_wait
        self.base = f"/jobs/{job_id}/federated"
        self.client_id: int | None = None
        self.heartbeat_s = 2.0
        self.setup: dict | None = None   # what the job told this client when it joined

    def run(self) -> int:
        """Take part in the job until it ends; the rounds this client reported.

        Raises:
            UserError: the job cannot be joined (not federated, not yours, never started within
                `wait_s`), or the local rows do not fit it.
        """
        setup = self._join()
        spec = JobSpec.model_validate(setup["spec"])
        data = local_rows(spec, setup, self.data_path)
        reported = 0
        while True:
            answer = self.remote.send("GET", f"{self.base}/task", accept=(409,),
                                      params={"client_id": self.client_id}, timeout=60)
            if answer.status_code == 409:
                return reported   # the job has ended
            if answer.status_code == 204:
                continue
            task = answer.json()
            began = time.perf_counter()
            weights = self.remote.send("GET", f"{self.base}/rounds/{task['round']}/weights", accept=(409,),
                                       params={"client_id": self.client_id}, timeout=120)
            if weights.status_code == 409:
                continue   # the round ended before this client got its weights
            global_weights = np.frombuffer(weights.content, FLOAT64).copy()
            if task["threshold"]:
                done = self._secure_round(task, partial(local_update, spec, spec.federated, data, global_weights,
                                                        task["seed"]))
            else:
                with self._heartbeats():
                    update = local_update(spec, spec.federated, data, global_weights, task["seed"])
                done = self._put(task["round"], np.asarray(update.delta, FLOAT64).tobytes(), update.examples)
            if done:
                reported += 1
                if self.on_round:
                    self.on_round(task["round"], data.n_train, time.perf_counter() - began)

    def _put(self, round_: int, body: bytes, examples: int) -> bool:
        """PUT this client's report of round `round_`; whether the round took it."""
        sent = self.remote.send("PUT", f"{self.base}/rounds/{round_}/update", accept=(409,),
                                params={"client_id": self.client_id, "examples": examples}, content=body,
                                headers={"Content-Type": "application/octet-stream"}, timeout=120)
        return sent.status_code == 202

    def _secure_round(self, task: dict, train: Callable[[], ClientUpdate]) -> bool:
        """A round under secure aggregation (`federated.secagg`): keys, shares, the masked input of
        the update `train()` makes, the shares for unmasking; whether the round took this client's
        input. The server never sees the update itself."""
        agent = SecAggClient(self.client_id)
        steps = f"{self.base}/rounds/{task['round']}/secagg"
        if not self._post(f"{steps}/keys", advertised_json(agent.advertise())):
            return False
        roster = self._step(f"{steps}/roster")
        if roster is None:
            return False
        shares = agent.share_keys([advertised_from(entry) for entry in roster["roster"]], task["threshold"])
        if not self._post(f"{steps}/shares", {"messages": [shared_json(m) for m in shares]}):
            return False
        inbox = self._step(f"{steps}/inbox")
        if inbox is None:
            return False
        agent.receive([shared_from(m) for m in inbox["messages"]])
        with self._heartbeats():
            update = train()
        masked = agent.masked_input(secured_input(update), inbox["peers"])
        if not self._put(task["round"], masked.values.astype(UINT64).tobytes(), update.examples):
            return False
        verdict = self._step(f"{steps}/unmask")
        if verdict is None:
            return False
        return self._post(f"{steps}/reveal", unmasking_json(agent.unmask(verdict["dropped"], verdict["survivors"])))

    def _post(self, path: str, message: dict) -> bool:
        """POST a step's message; whether the round took it."""
        return self.remote.send("POST", path, accept=(409,), params={"client_id": self.client_id},
                                json=message).status_code == 202

    def _step(self, path: str) -> dict | None:
        """What a step of the protocol gives this client, polling until the step before closes;
        None when the round has no place for it any more."""
        while True:
            answer = self.remote.send("GET", path, accept=(409,), params={"client_id": self.client_id}, timeout=60)
            if answer.status_code == 409:
                return None
            if answer.status_code == 200:
                return answer.json()

    def _join(self) -> dict:
        """Join the job, trying again while it is queued or starting; the job's setup."""
        deadline, told = time.monotonic() + self.wait_s, False
        while True:
            answer = self.remote.send("POST", f"{self.base}/clients", accept=(409,))
            if answer.status_code == 201:
                joined = answer.json()
                self.client_id, self.heartbeat_s = joined["client_id"], joined["heartbeat_s"]
                self.setup = joined["setup"]
                return self.setup
            reason = detail_of(answer)
            if "has ended" in reason or "not federated" in reason or time.monotonic() > deadline:
                raise UserError(f"cannot join job {self.job_id}: {reason}", where=self.remote.server,
                                fix="give the id of a federated job that runs (`elastrain jobs`)", exit_code=1)
            if self.on_wait and not told:
                self.on_wait(reason)
                told = True
            time.sleep(JOIN_RETRY_S)

    @contextlib.contextmanager
    def _heartbeats(self) -> Iterator[None]:
        """A block during which a thread tells the server, every half heartbeat interval, that
        this client is alive."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s / 2):
                try:
                    self.remote.send("POST", f"{self.base}/heartbeat", accept=(409,),
                                     params={"client_id": self.client_id})
                except UserError:
                    continue   # a missed beat: the server counts silence, not one failure

        thread = threading.Thread(target=beat, name="heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
