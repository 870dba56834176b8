"""Federated rounds in one process (issue 32): a client trains with the job's own trainer, FedAvg
over one client is centralized training, FedProx holds clients near the global model, and a
simulated federation over a Dirichlet split learns, the same on every run."""

import json

import numpy as np
import pytest

from elastrain.data.dataset import prepare_dataset
from elastrain.federated.client import client_rows, global_weights, local_update
from elastrain.federated.partition import partition
from elastrain.federated.privacy import epsilon
from elastrain.federated.simulate import simulate
from elastrain.spec import parse_spec
from elastrain.spec.federated import FederatedSpec, PrivacySpec
from elastrain.train.trainer import Trainer

JOB = """
name: fed-digits
data: {source: 'builtin:digits'}
model: {kind: mlp, hidden: [32]}
train: {optimizer: sgd, lr: 0.05, batch_size: 32, epochs: 1, seed: 5}
"""


@pytest.fixture(scope="module")
def job():
    spec = parse_spec(JOB)
    return spec, prepare_dataset(spec)


def test_fedavg_over_one_client_holding_every_row_is_centralized_training(job):
    """Kind: the same mathematics. One round of 3 local epochs by the only client, seeded as the
    job, moves the global model exactly where 3 epochs of ordinary training take it."""
    spec, data = job
    federated = FederatedSpec(rounds=1, clients_per_round=1, min_clients=1, local_epochs=3, local_batch_size=32)
    start = global_weights(Trainer(spec, data))
    update = local_update(spec, federated, client_rows(data, np.arange(data.n_train)), start, spec.train.seed)
    central = Trainer(spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 3})}), data)
    while not central.done:
        central.train_step()
    assert update.examples == data.n_train
    assert np.abs(start + update.delta - global_weights(central)).max() <= 1e-6


def test_fedprox_holds_a_client_near_the_global_model(job):
    """Kind: the strategy's effect. With a large proximal weight the client's update is a fraction of
    the unconstrained one; with mu 0 it is FedAvg's exactly."""
    spec, data = job
    rows = client_rows(data, np.arange(0, data.n_train, 3))
    start = global_weights(Trainer(spec, data))
    free = local_update(spec, FederatedSpec(local_epochs=2), rows, start, 1)
    held = local_update(spec, FederatedSpec(strategy="fedprox", proximal_mu=5.0, local_epochs=2), rows, start, 1)
    zero = local_update(spec, FederatedSpec(strategy="fedprox", proximal_mu=0.0, local_epochs=2), rows, start, 1)
    assert np.linalg.norm(held.delta) < 0.5 * np.linalg.norm(free.delta)
    assert np.array_equal(zero.delta, free.delta)


def test_a_simulated_federation_over_a_dirichlet_split_learns_and_is_seeded(job):
    """Kind: end to end. 20 clients holding Dirichlet(0.5) shares of the digits, 5 a round: the
    global model's validation accuracy climbs past 0.85 in 15 rounds, and a second run gives the
    same rounds."""
    spec, data = job
    federated = FederatedSpec(rounds=15, clients_per_round=5, min_clients=2, local_epochs=2, local_batch_size=16)
    parts = partition(data.y_train, 20, "dirichlet", 0.5, seed=0, min_rows=10)
    _, records = simulate(spec, federated, data, parts)
    accuracy = [r.metrics["accuracy"] for r in records]
    assert len(records) == 15 and all(len(r.asked) == len(r.reported) == 5 and r.aggregated for r in records)
    assert accuracy[-1] > 0.85 and accuracy[-1] > accuracy[0]
    _, again = simulate(spec, federated, data, parts)
    assert [r.asked for r in again] == [r.asked for r in records]
    assert [r.metrics["accuracy"] for r in again] == accuracy


def test_a_federation_under_client_level_privacy_reports_the_privacy_it_spends(job):
    """Kind: end to end. With `privacy:` each round's record carries the epsilon spent so far, the
    accountant's for the rounds aggregated at a sampling rate of 5 of 20 clients; with clipping and
    little noise the global model still learns."""
    spec, data = job
    privacy = PrivacySpec(clip=2.0, noise_multiplier=0.02, delta=1e-4)
    federated = FederatedSpec(rounds=8, clients_per_round=5, min_clients=2, local_epochs=2, local_batch_size=16,
                              privacy=privacy)
    parts = partition(data.y_train, 20, "iid", None, seed=0)
    _, records = simulate(spec, federated, data, parts)
    assert [r.epsilon for r in records] == [pytest.approx(epsilon(privacy, [0.25] * r.round)) for r in records]
    assert records[-1].metrics["accuracy"] > 0.7


def test_the_cli_simulates_a_federation_and_refuses_what_it_cannot_run(cli, tmp_path):
    """Kind: the command as users run it. `elastrain federated simulate --json` reports every
    round's validation accuracy; a spec without `federated:`, a split that cannot be drawn, and
    `elastrain run` of a federated job are each exit 2 with one line that says what to do."""
    spec_file = tmp_path / "fed.yaml"
    spec_file.write_text(JOB + "federated: {rounds: 4, clients_per_round: 3, local_epochs: 1}\n")
    code, out, err = cli("federated", "simulate", spec_file, "--clients", "6", "--partition", "iid", "--workers", "0",
                         "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rounds"] == 4 and summary["clients"] == 6 and len(summary["val_accuracy"]) == 4
    assert summary["final"]["val_accuracy"] == pytest.approx(summary["val_accuracy"][-1], abs=1e-6)
    assert summary["val_accuracy"][-1] > 0.5
    plain = tmp_path / "plain.yaml"
    plain.write_text(JOB)
    for args, message in (((plain,), "has no federated: section"),
                          ((spec_file, "--partition", "dirichlet:0"), "dirichlet:ALPHA with ALPHA > 0"),
                          ((spec_file, "--clients", "5000"), "cannot give 5000 clients"),
                          ((spec_file, "--workers", "0", "--drop", "0.3"), "give --workers 1 or more")):
        code, _, err = cli("federated", "simulate", *args)
        assert code == 2 and message in err and "Traceback" not in err, err
    code, _, err = cli("run", spec_file)
    assert code == 2 and "elastrain federated simulate" in err and "Traceback" not in err, err
