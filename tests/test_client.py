"""The client commands against a real server (API over HTTP on 127.0.0.1 plus the job loop)."""

import json
import secrets
import shutil

import pytest

from elastrain.client import Remote
from elastrain.elastic.collective import free_port
from elastrain.sdk import ServerJobHandle
from tests.conftest import REPO


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def test_submit_follow_and_inspect_a_job(cli, server):
    url, tokens = server
    ada = ["--server", url, "--token", tokens["ada"]]
    code, out, _ = cli("submit", REPO / "examples" / "svm_iris.yaml", "--set", "train.epochs=5", *ada, "--json")
    job_id = last_json(out)["job_id"]
    assert code == 0
    code, out, _ = cli("logs", job_id, "--follow", *ada)   # returns once the job has ended
    assert code == 0 and "epoch 5 (step" in out and "succeeded at step" in out
    code, out, _ = cli("status", job_id, *ada, "--json")
    job = last_json(out)
    assert code == 0 and job["status"] == "succeeded" and job["metrics"]["val_accuracy"] > 0.5
    assert {"job_id", "status", "workers", "metrics"} <= set(job)
    assert job["progress"]["step"] == job["progress"]["total_steps"] > 0
    assert job["progress"]["events"][-1]["kind"] == "succeeded"
    code, out, _ = cli("status", job_id, *ada)   # as a local run's: figures, then events
    assert code == 0 and "time left" in out and "succeeded" in out and "events" in out and "owner" in out
    code, out, _ = cli("jobs", *ada, "--json")
    assert [j["job_id"] for j in last_json(out)["jobs"]] == [job_id]
    code, out, _ = cli("metrics", job_id, *ada, "--json")
    series = last_json(out)["series"]
    assert [p["epoch"] for p in series["val_accuracy"]] == [1, 2, 3, 4, 5]
    # The training loss of every step (a short job: one point per step).
    assert [p["step"] for p in series["train_loss"]] == list(range(1, series["val_accuracy"][-1]["step"] + 1))
    assert {p["epoch"] for p in series["train_loss"]} == {1, 2, 3, 4, 5}
    code, out, _ = cli("models", *ada, "--json")
    assert [(m["name"], m["version"]) for m in last_json(out)["models"]] == [("svm-iris", 1)]
    code, out, _ = cli("jobs", *ada)   # into a pipe: tab-separated, the header first
    header, row = out.strip().splitlines()
    assert code == 0 and header.split("\t") == ["job", "status", "workers", "age", "acc / r2"]
    assert row.split("\t")[:2] == [job_id, "succeeded"]


def test_client_errors_are_one_line(cli, server, tmp_path):
    url, tokens = server
    code, out, _ = cli("submit", REPO / "examples" / "svm_iris.yaml", "--set", "train.epochs=2",
                       "--server", url, "--token", tokens["ada"], "--json")
    job_id = last_json(out)["job_id"]
    code, _, err = cli("status", job_id, "--server", url, "--token", tokens["bob"])
    assert code == 1 and f"no job '{job_id}' (or it is not yours)" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("jobs", "--server", url, "--token", "et_nope")
    assert code == 1 and "rejected the token" in err
    code, _, err = cli("jobs", "--server", f"http://127.0.0.1:{free_port()}", "--token", tokens["ada"])
    assert code == 1 and "cannot reach the elastrain server" in err
    code, _, err = cli("jobs", "--server", url)
    assert code == 2 and "ELASTRAIN_TOKEN" in err
    (tmp_path / "bad.yaml").write_text("train: {lr: 0}\n")
    code, _, err = cli("submit", tmp_path / "bad.yaml", "--server", url, "--token", tokens["ada"])
    assert code == 2 and "train.lr" in err


def test_a_submitted_job_takes_its_code_and_data_with_it(cli, server, tmp_path):
    """The spec's python: model and CSV lie beside it on the submitter's disk only: submit ships
    them, and the job runs from the server's copy (a fresh module name: nothing imported before)."""
    from sklearn.datasets import load_wine

    url, tokens = server
    ada = ["--server", url, "--token", tokens["ada"]]
    client = tmp_path / "client"
    client.mkdir()
    module = f"shipped_model_{secrets.token_hex(4)}"
    (client / f"{module}.py").write_text((REPO / "examples" / "my_model.py").read_text())
    load_wine(as_frame=True).frame.to_csv(client / "wine.csv", index=False)
    (client / "job.yaml").write_text(f"name: shipped\ndata: {{source: 'csv:wine.csv'}}\n"
                                     f"model: {{kind: 'python:{module}:build', options: {{width: 16}}}}\n"
                                     "train: {optimizer: adam, lr: 0.01, epochs: 3}\n")
    code, out, _ = cli("submit", client / "job.yaml", *ada, "--json")
    assert code == 0
    job_id = last_json(out)["job_id"]
    shutil.rmtree(client)   # from here on nothing on the submitter's disk can be read
    code, out, _ = cli("logs", job_id, "--follow", *ada)
    assert code == 0 and "succeeded at step" in out
    code, out, _ = cli("status", job_id, *ada, "--json")
    job = last_json(out)
    assert job["status"] == "succeeded" and job["spec"]["data"]["source"] == "csv:data/wine.csv"


def test_a_job_submitted_from_python_is_followed_through_its_handle(server):
    import elastrain

    url, tokens = server
    job = elastrain.Job.from_yaml(REPO / "examples" / "svm_iris.yaml", overrides={"train.epochs": 4})
    handle = job.submit(server=url, token=tokens["ada"])
    assert handle.status().job_id == handle.job_id
    result = handle.result(timeout=120)
    assert result.status == "succeeded" and result.epochs == 4 and result.metrics["val_accuracy"] > 0.5
    status = handle.status()
    assert isinstance(status, elastrain.JobStatus) and status.state == "succeeded" and status.step == result.steps
    kinds = [event.kind for event in handle.events()]
    assert kinds[0] == "start" and kinds[-1] == "succeeded"
    series = handle.metrics()
    assert [p["epoch"] for p in series["val_accuracy"]] == [1, 2, 3, 4] and series["train_loss"]
    assert list(handle.metrics(since=series["val_accuracy"][-1]["t"])) == []
    with pytest.raises(elastrain.UserError, match=r"range 1\.\.1"):
        handle.scale(2)
    with pytest.raises(elastrain.UserError, match="already ended"):
        handle.cancel()
    with pytest.raises(elastrain.UserError, match="not yours"):   # bob's view of ada's job
        ServerJobHandle(Remote(url, tokens["bob"]), handle.job_id).status()
