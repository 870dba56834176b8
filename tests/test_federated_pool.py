"""Simulated clients as processes on Ray (issue 32): a pool of processes trains the clients in turns
and gives the rounds the in-process loop gives; a client whose process is SIGKILLed mid-round is
dropped and the round goes on; a client still training at the deadline is cut, counted, not failed."""

import json

import numpy as np
import pytest

from elastrain.data.dataset import prepare_dataset
from elastrain.federated.client import global_weights
from elastrain.federated.partition import partition
from elastrain.federated.pool import ClientPool
from elastrain.federated.simulate import simulate
from elastrain.spec import parse_spec
from elastrain.spec.federated import FederatedSpec
from elastrain.train.trainer import Trainer

JOB = """
name: fed-pool
data: {source: 'builtin:digits'}
model: {kind: mlp, hidden: [32]}
train: {optimizer: sgd, lr: 0.05, batch_size: 32, epochs: 1, seed: 3}
"""

pytestmark = pytest.mark.usefixtures("ray_address")


@pytest.fixture(scope="module")
def job():
    spec = parse_spec(JOB)
    data = prepare_dataset(spec)
    return spec, data, partition(data.y_train, 12, "dirichlet", 0.5, seed=0, min_rows=10)


def pooled(spec, federated, data, parts, workers, drop=0.0):
    pool = ClientPool(spec, federated, data, parts, workers, drop)
    try:
        return simulate(spec, federated, data, parts, clients=pool)
    finally:
        pool.close()


def test_a_pool_of_processes_gives_the_rounds_of_the_in_process_loop(job):
    """Kind: the same mathematics. Clients trained in turns by 2 processes (one torch thread each)
    move the global model where training them one after another in this process does."""
    spec, data, parts = job
    federated = FederatedSpec(rounds=3, clients_per_round=4, min_clients=2, local_epochs=2, local_batch_size=16)
    alone, here = simulate(spec, federated, data, parts)
    state, records = pooled(spec, federated, data, parts, workers=2)
    assert [r.asked for r in records] == [r.asked for r in here]
    assert all(r.reported == r.asked and r.aggregated for r in records)
    assert np.abs(state.weights - alone.weights).max() <= 1e-5
    assert records[-1].metrics["accuracy"] == pytest.approx(here[-1].metrics["accuracy"], abs=1e-3)


def test_a_client_killed_mid_round_is_dropped_and_the_round_goes_on(job):
    """Kind: failure. 2 of each round's 5 clients SIGKILL their process halfway through local
    training: every round aggregates the other 3, Ray replaces the dead processes, and the global
    model still learns."""
    spec, data, parts = job
    federated = FederatedSpec(rounds=4, clients_per_round=5, min_clients=3, local_epochs=2, local_batch_size=16)
    _, records = pooled(spec, federated, data, parts, workers=2, drop=0.4)
    for record in records:
        assert len(record.dropped) == 2 and len(record.reported) == 3 and not record.late and record.aggregated
        assert set(record.dropped) | set(record.reported) == set(record.asked)
    assert records[-1].metrics["accuracy"] > 0.5


def test_clients_still_training_at_the_deadline_are_cut_and_the_model_is_kept(job):
    """Kind: stragglers. Clients whose local training runs far past a 0.5 s deadline (thousands of
    steps) are cut and counted as late; with none reported the round keeps the global model, and
    the next round runs on fresh processes."""
    spec, data, parts = job
    federated = FederatedSpec(rounds=2, clients_per_round=3, min_clients=1, local_epochs=5000, local_batch_size=2,
                              round_deadline_s=0.5)
    state, records = pooled(spec, federated, data, parts, workers=2)
    for record in records:
        assert record.late == record.asked and not record.reported and not record.aggregated
    assert np.array_equal(state.weights, global_weights(Trainer(spec, data)))


def test_the_cli_runs_clients_on_processes_and_reports_drops(cli, tmp_path):
    """Kind: the command as users run it. `--workers 2 --drop 0.34` reports, round by round, the
    clients asked, reported and dropped in its JSON."""
    spec_file = tmp_path / "fed.yaml"
    spec_file.write_text(JOB + "federated: {rounds: 3, clients_per_round: 3, min_clients: 2, local_epochs: 1}\n")
    code, out, err = cli("federated", "simulate", spec_file, "--clients", "6", "--partition", "iid", "--workers", "2",
                         "--drop", "0.34", "--json")
    assert code == 0, err
    # the session's Ray prints its notices of the killed processes to this stdout; a user's run logs them
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert summary["workers"] == 2 and summary["reported"] == [2, 2, 2] and summary["dropped"] == [1, 1, 1]
    assert summary["aggregated"] == [True] * 3 and len(summary["val_accuracy"]) == 3
