"""A federated job run by the server: rounds over the clients that connect to it.

The job's driver (`elastic.driver.JobDriver`) runs `serve_rounds` and hands the clients' requests
(through the API, `api.federated`) to the same `RoundCoordinator`. The server holds the job's
data source for its validation rows and preprocessing (which its clients receive and apply to
their own rows), never any client's rows. Each round's record goes to the run folder's history
(the job's curves) and log; the final global model is saved as any job's model.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from elastrain.data.dataset import Dataset, prepare_dataset
from elastrain.elastic.control import JobControl
from elastrain.elastic.events import RecordSink
from elastrain.elastic.job import scalar_metrics
from elastrain.federated.coordinator import Closed, RoundCoordinator
from elastrain.federated.simulate import ClientsRound, RoundRecord, run_rounds
from elastrain.runs import JobResult, JobState, RunFolder
from elastrain.spec import JobSpec
from elastrain.train.trainer import Trainer


def client_setup(spec: JobSpec, data: Dataset) -> dict:
    """What a client needs before its first round, as JSON: the job's spec, its preprocessing
    (`data.preprocess.Preprocessor` fields) and task, from the server's data set `data`."""
    return {"spec": spec.model_dump(mode="json"), "preprocessor": asdict(data.preprocessor), "task": data.task,
            "n_classes": data.n_classes}


def serve_rounds(spec: JobSpec, folder: RunFolder, coordinator: RoundCoordinator, control: JobControl,
                 sink: RecordSink | None = None) -> JobResult:
    """Run the federated job `spec` to its end: its rounds over the clients `coordinator` hears
    from, its record in `folder` (created here unless it exists) and `sink` (the store's metric
    series: each validation metric and `federated_*` counts per round), its model saved there.

    Raises:
        UserError: the server's data cannot be read, or too few clients came within the wait timeout.
    """
    started = time.time()
    federated = spec.federated
    data = prepare_dataset(spec)
    if folder.path.exists():   # a driver that resumes the job: its rounds start again
        folder.log("the job's driver was replaced: its rounds start again from round 1")
    else:
        folder.create(spec)
    server = Trainer(spec, data)
    coordinator.open(client_setup(spec, data))

    def run_round(round_, weights) -> ClientsRound:
        if control.cancel_requested():
            raise Closed
        return coordinator(round_, weights)

    def record(entry: RoundRecord) -> None:
        counts = {"clients_asked": len(entry.asked), "clients_reported": len(entry.reported),
                  "clients_dropped": len(entry.dropped), "clients_late": len(entry.late),
                  "update_bytes": entry.update_bytes}
        now = time.time()
        folder.append_history({"epoch": entry.round, "step": entry.round, "t": now, **scalar_metrics(entry.metrics),
                               **counts, "aggregated": entry.aggregated, "epsilon": entry.epsilon})
        if sink is not None:
            series = {**scalar_metrics(entry.metrics), **{f"federated_{k}": v for k, v in counts.items()},
                      **({"federated_epsilon": entry.epsilon} if entry.epsilon is not None else {})}
            sink.metrics([{"name": name, "step": entry.round, "epoch": entry.round, "value": float(value), "t": now}
                          for name, value in series.items()])
        folder.log(f"round {entry.round}: {len(entry.reported)} of {len(entry.asked)} clients reported "
                   f"({len(entry.dropped)} dropped, {len(entry.late)} late), "
                   + ("aggregated" if entry.aggregated else "too few: the global model is kept"))

    try:
        _, records = run_rounds(federated, server, run_round, record)
        status, message = JobState.SUCCEEDED, None
    except Closed:   # cancelled: between rounds, or while a round waited
        records, status = folder.read_history(), JobState.CANCELLED
        message = f"cancelled after round {len(records)}"
    finally:
        coordinator.close()
    rounds = len(records)
    model_path = str(server.save(folder.model_dir, spec.model_dump(mode="json"))) if status is JobState.SUCCEEDED \
        else None
    result = JobResult(job_id=folder.job_id, status=status, epochs=rounds, steps=rounds,
                       metrics=scalar_metrics(server.evaluate()), model_path=model_path,
                       wall_s=round(time.time() - started, 3), run_dir=str(folder.path), message=message)
    folder.write_result(result.to_dict())
    return result
