"""Federated jobs on a real `elastrain server` over HTTPS (issue 32): clients (`elastrain client`
processes, and one in this process whose every request is recorded) join a submitted job, train
the rounds they are asked to on rows they keep, and send only updates; a client killed mid-job is
cut and the rounds go on; a job no client joins fails after its wait timeout; another user's
token and rows with other columns are refused in one line."""

import json
import os
import signal
import ssl
import subprocess
import sys

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from elastrain.client import Remote
from elastrain.data.dataset import prepare_dataset
from elastrain.elastic.collective import free_port
from elastrain.federated.client import global_weights, local_update
from elastrain.federated.remote import FederatedClient, local_rows
from elastrain.federated.secagg import decode
from elastrain.federated.simulate import round_seed
from elastrain.security.certs import issue_cert
from elastrain.spec import JobSpec
from elastrain.train.artifact import load_model
from elastrain.train.trainer import Trainer
from tests.conftest import REPO, start_server, wait_until

pytestmark = [pytest.mark.usefixtures("ray_address"), pytest.mark.slow]

JOB = """
name: fed-cancer
data: {{source: 'csv:{server_rows}', target: target}}
model: {{kind: mlp, hidden: [16]}}
train: {{optimizer: sgd, lr: 0.05, batch_size: 16, epochs: 1, seed: 1}}
federated: {{rounds: {rounds}, clients_per_round: 3, min_clients: {least}, local_epochs: 2, local_batch_size: 16,
            round_deadline_s: {deadline}, wait_timeout_s: {wait}, secure_aggregation: {secure}}}
"""
# A client process that SIGKILLs itself in round 2 after it has shared its keys, before it sends
# its masked input: the drop secure aggregation must survive.
VICTIM = """
import os, signal, sys
from pathlib import Path
from elastrain.client import Remote
from elastrain.federated.remote import FederatedClient

class Victim(FederatedClient):
    def _secure_round(self, task, train):
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._secure_round(task, die if task["round"] == 2 else train)

url, token, ca, job, data = sys.argv[1:]
Victim(Remote(url, Path(token).read_text().strip(), ca), job, Path(data),
       on_round=lambda r, n, s: print(f"round {r}", file=sys.stderr, flush=True)).run()
"""


@pytest.fixture(scope="module")
def federation(tmp_path_factory, ray_address):
    """A real server over HTTPS with users ada and bob, the rows the server holds (its validation
    rows), and three clients' own tables of other rows."""
    folder = tmp_path_factory.mktemp("federation")
    home = folder / "home"
    env = {**os.environ, "ELASTRAIN_HOME": str(home)}
    tokens = {}
    for name in ("ada", "bob"):
        made = subprocess.run([sys.executable, "-m", "elastrain", "admin", "create-user", name], cwd=REPO, env=env,
                              capture_output=True, text=True, check=True)
        (folder / f"{name}.token").write_text(made.stdout.strip().splitlines()[-1])
        tokens[name] = folder / f"{name}.token"
    frame = load_breast_cancer(as_frame=True).frame
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)
    shuffled.iloc[:200].to_csv(folder / "server.csv", index=False)
    clients = []
    for index, part in enumerate(np.array_split(np.arange(200, len(shuffled)), 3)):
        path = folder / f"client{index}.csv"
        shuffled.iloc[part].to_csv(path, index=False)
        clients.append(path)
    issued = issue_cert(folder / "certs", ["127.0.0.1"])
    port = free_port()
    process = start_server(home, port, ray_address, "--tls-cert", issued.cert, "--tls-key", issued.key,
                           verify=ssl.create_default_context(cafile=issued.ca_cert), log=folder / "server.log")
    yield {"url": f"https://127.0.0.1:{port}", "ca": issued.ca_cert, "tokens": tokens, "folder": folder,
           "clients": clients, "server_rows": folder / "server.csv"}
    process.kill()
    process.wait(timeout=30)


def remote(federation, user="ada") -> Remote:
    return Remote(federation["url"], federation["tokens"][user].read_text().strip(), federation["ca"])


def submit(federation, rounds=3, deadline=120, wait=120, least=2, secure=False) -> str:
    spec = federation["folder"] / f"job-{rounds}-{deadline}-{wait}-{least}-{secure}.yaml"
    spec.write_text(JOB.format(server_rows=federation["server_rows"], rounds=rounds, deadline=deadline, wait=wait,
                               least=least, secure=str(secure).lower()))
    return remote(federation).call("POST", "/jobs", content=spec.read_text(),
                                   headers={"Content-Type": "application/yaml"})["job_id"]


def client_process(federation, job_id, data, user="ada") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "elastrain", "client", job_id, "--data", str(data), "--server",
                             federation["url"], "--token", f"@{federation['tokens'][user]}", "--ca-cert",
                             str(federation["ca"]), "--json"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def three_clients(federation, job_id) -> tuple[list[subprocess.Popen], FederatedClient, list[httpx.Request]]:
    """Two `elastrain client` processes on the second and third tables, and a client of the first
    to run in this process, whose every request is recorded (the list)."""
    others = [client_process(federation, job_id, data) for data in federation["clients"][1:]]
    sent: list[httpx.Request] = []
    recorder = remote(federation)
    recorder.client.event_hooks["request"].append(sent.append)
    return others, FederatedClient(recorder, job_id, federation["clients"][0]), sent


def succeeded(federation, job_id, processes) -> list[dict]:
    """The rounds (history records) of a job that succeeded once its client `processes` ended, each
    with exit code 0."""
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    job = ended(federation, job_id)
    assert job["status"] == "succeeded", job
    return [json.loads(line) for line in (federation["folder"] / "home" / "runs" / job_id / "history.jsonl")
            .read_text().splitlines()]


def said_lines(err: str) -> list[str]:
    """A client's standard error without its note that it waits for the job to run."""
    return [line for line in err.strip().splitlines() if not line.startswith("waiting to join: ")]


def ended(federation, job_id) -> dict:
    wait_until(lambda: remote(federation).call("GET", f"/jobs/{job_id}")["status"] in
               ("succeeded", "failed", "cancelled"), timeout=300, poll=0.5)
    return remote(federation).call("GET", f"/jobs/{job_id}")


def test_clients_train_the_rounds_and_send_nothing_but_their_updates(federation):
    """Kind: end to end, and the data-stays-home property. Two `elastrain client` processes and
    one client in this process (every request it makes recorded) take part in a 3-round job over
    HTTPS: the job succeeds with a model, each round aggregated 3 clients' updates (in its history
    and in the store's metric series), and the recorded client sent bodies only with its updates,
    each exactly the model's float64 values, none holding a row of its table."""
    job_id = submit(federation, least=3)   # every round waits for all three
    others, mine, sent = three_clients(federation, job_id)
    assert mine.run() == 3
    for process in others:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1])["rounds_reported"] == 3
    job = ended(federation, job_id)
    assert job["status"] == "succeeded" and job["metrics"]["val_accuracy"] > 0.85, job
    history = [json.loads(line) for line in (federation["folder"] / "home" / "runs" / job_id / "history.jsonl")
               .read_text().splitlines()]
    assert [(h["clients_asked"], h["clients_reported"], h["aggregated"]) for h in history] == [(3, 3, True)] * 3
    series = remote(federation).call("GET", f"/jobs/{job_id}/metrics")   # what the dashboard plots
    assert [p["value"] for p in series["federated_clients_reported"]] == [3.0] * 3
    assert [p["epoch"] for p in series["val_accuracy"]] == [1, 2, 3]
    bodies = [bytes(request.content) for request in sent if request.content]
    parameters = 30 * 16 + 16 + 16 * 2 + 2
    assert len(bodies) == 3 and all(len(body) == 8 * parameters for body in bodies)
    rows = pd.read_csv(federation["clients"][0])
    for body in bodies:
        for values in rows.drop(columns="target").to_numpy()[:50]:
            assert values.astype("<f8").tobytes()[:16] not in body and values.astype("<f4").tobytes()[:8] not in body
    assert all(request.url.host == "127.0.0.1" and request.url.scheme == "https" for request in sent)


def test_a_client_killed_mid_job_is_cut_and_the_rounds_go_on(federation):
    """Kind: failure. Of 3 clients (2 must report), one is SIGKILLed after the first round it
    reported: the next round, which asked it, ends at its 15 s deadline with the other two reported
    and aggregated, and the job succeeds."""
    job_id = submit(federation, rounds=4, deadline=15)
    processes = [client_process(federation, job_id, data) for data in federation["clients"]]
    victim = processes[0]
    line = victim.stderr.readline()
    while not line.startswith("round "):
        assert line, "the client ended before it reported a round"
        line = victim.stderr.readline()
    last = int(line.split()[1].rstrip(":"))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    history = succeeded(federation, job_id, processes[1:])
    assert last < 4 and all(h["aggregated"] and h["clients_reported"] >= 2 for h in history)
    after = history[last]   # the round after the victim's last
    assert after["clients_asked"] == 3 and after["clients_reported"] == 2
    assert after["clients_dropped"] + after["clients_late"] == 1


def test_under_secure_aggregation_the_server_gets_the_sum_and_never_an_update(federation):
    """Kind: the protocol over real HTTPS. Three clients run a secure round through the server:
    the model it ends with is the initial one plus the examples-weighted mean of the three
    updates, recomputed here from each client's rows and seed (to 1e-5), while the recorded
    client's only upload of its update is masked: not its float64 values, and nothing like them
    once decoded."""
    job_id = submit(federation, rounds=1, least=3, secure=True)
    others, mine, sent = three_clients(federation, job_id)
    assert mine.run() == 1
    ids = {mine.client_id: federation["clients"][0]}
    for process, data in zip(others, federation["clients"][1:], strict=True):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        ids[json.loads(out.strip().splitlines()[-1])["client_id"]] = data
    job = ended(federation, job_id)
    assert job["status"] == "succeeded", job
    spec = JobSpec.model_validate(mine.setup["spec"])
    start = global_weights(Trainer(spec, prepare_dataset(spec)))
    updates = {c: local_update(spec, spec.federated, local_rows(spec, mine.setup, path), start,
                               round_seed(spec.train.seed, 0, c)) for c, path in ids.items()}
    expected = start + sum(u.examples * u.delta for u in updates.values()) / sum(u.examples for u in updates.values())
    saved = load_model(federation["folder"] / "home" / "runs" / job_id / "model")
    final = np.concatenate([p.detach().double().numpy().ravel() for p in saved.model.parameters()])
    assert np.abs(final - expected).max() < 1e-5
    uploads = [bytes(r.content) for r in sent if r.method == "PUT"]
    mine_update = updates[mine.client_id]
    assert len(uploads) == 1 and len(uploads[0]) == 8 * (mine_update.delta.size + 1)
    assert uploads[0][:8 * mine_update.delta.size] != mine_update.delta.astype("<f8").tobytes()
    seen = decode(np.frombuffer(uploads[0], "<u8").copy())
    assert np.abs(seen[:-1] - mine_update.examples * mine_update.delta).max() > 1.0


def test_a_client_killed_after_sharing_its_keys_is_unmasked_away(federation):
    """Kind: failure under secure aggregation. Of 3 clients (2 must report), one SIGKILLs its
    process in round 2 after sharing its keys, before sending its masked input: the survivors'
    shares remove its masks, round 2 aggregates the other two, and the job succeeds."""
    job_id = submit(federation, rounds=3, deadline=15, secure=True, least=2)
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, federation["url"], str(federation["tokens"]["ada"]),
                               str(federation["ca"]), job_id, str(federation["clients"][0])], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    others = [client_process(federation, job_id, data) for data in federation["clients"][1:]]
    victim.wait(timeout=300)
    assert victim.returncode == -signal.SIGKILL
    history = succeeded(federation, job_id, others)
    killed_in = history[1]
    assert killed_in["clients_reported"] == 2 and killed_in["aggregated"]
    assert killed_in["clients_dropped"] + killed_in["clients_late"] == 1
    assert all(h["aggregated"] for h in history)


def test_a_job_no_client_joins_fails_after_its_wait_and_strangers_and_wrong_rows_are_refused(federation):
    """Kind: refusals, each one line. A job that no client joins fails after its 3 s wait timeout
    with a message saying how many clients came, and a client that comes later is told it ended;
    bob's token finds no job of ada's (exit 1); a
    table with a column the job does not have, and one without a feature the job has, are exit 2
    naming them."""
    job_id = submit(federation, rounds=2, wait=3)
    job = ended(federation, job_id)
    assert job["status"] == "failed" and "waited 3 s for 2 clients; 0 connected" in job["message"], job
    assert "\n" not in job["message"]
    late = client_process(federation, job_id, federation["clients"][0])
    _, err = late.communicate(timeout=120)
    assert late.returncode == 1 and f"cannot join job {job_id}: job {job_id} has ended (failed)" in err, err
    assert len(said_lines(err)) == 1
    running = submit(federation, rounds=2, wait=120)
    stranger = client_process(federation, running, federation["clients"][0], user="bob")
    _, err = stranger.communicate(timeout=120)
    assert stranger.returncode == 1 and "not yours" in err and len(said_lines(err)) == 1, err
    table = pd.read_csv(federation["clients"][1])
    for name, changed, said in (("extra", table.assign(postcode=1), "not in the job: postcode"),
                                ("missing", table.drop(columns="mean radius"), "missing mean radius")):
        path = federation["folder"] / f"{name}.csv"
        changed.to_csv(path, index=False)
        wrong = client_process(federation, running, path)
        _, err = wrong.communicate(timeout=120)
        assert wrong.returncode == 2 and said in err and len(said_lines(err)) == 1, err
        assert "Traceback" not in err
    remote(federation).call("POST", f"/jobs/{running}/cancel")
    assert ended(federation, running)["status"] == "cancelled"
