"""The REST API over real HTTP on 127.0.0.1, on a real SQLite store."""

import collections
import json
import threading

import httpx
import pytest

from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.store import Store, connect

SPEC = {"name": "api-job", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"},
        "train": {"epochs": 2}}


@pytest.fixture
def api(tmp_path):
    """A running server, its store, and tokens of users ada, bob and root (admin)."""
    store = Store(connect(f"sqlite:///{tmp_path / 'api.db'}"))
    tokens = {name: store.create_user(name, admin=name == "root")[1] for name in ("ada", "bob", "root")}
    with serving_in_thread(create_app(store, max_body=20_000)) as url, httpx.Client(base_url=f"{url}/api/v1",
                                                                          timeout=30) as client:
        yield client, tokens, store


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def test_no_token_is_401_and_the_openapi_document_is_public(api):
    client, tokens, _ = api
    assert client.get("/jobs").status_code == 401
    assert client.get("/jobs", headers=auth("et_wrong")).status_code == 401
    assert client.get("/jobs", headers={"Authorization": tokens["ada"]}).status_code == 401   # no scheme
    document = client.get("/openapi.json").json()
    assert "/api/v1/jobs" in document["paths"] and "/api/v1/jobs/{job_id}/events" in document["paths"]


def test_users_see_only_their_jobs_and_admins_see_all(api):
    client, tokens, _ = api
    made = client.post("/jobs", json=SPEC, headers=auth(tokens["ada"]))
    assert made.status_code == 201 and made.json()["status"] == "queued"
    job_id = made.json()["job_id"]
    as_yaml = client.post("/jobs", content="name: yaml-job\nmodel: {kind: mlp}\n",
                          headers={**auth(tokens["bob"]), "Content-Type": "application/yaml"})
    assert as_yaml.status_code == 201
    assert client.get(f"/jobs/{job_id}", headers=auth(tokens["ada"])).json()["owner"] == "ada"
    assert client.get(f"/jobs/{job_id}", headers=auth(tokens["bob"])).status_code == 404
    assert client.get(f"/jobs/{job_id}/events", headers=auth(tokens["bob"])).status_code == 404
    assert client.post(f"/jobs/{job_id}/cancel", headers=auth(tokens["bob"])).status_code == 404
    assert client.get(f"/jobs/{job_id}", headers=auth(tokens["root"])).status_code == 200
    assert [j["job_id"] for j in client.get("/jobs", headers=auth(tokens["ada"])).json()["jobs"]] == [job_id]
    assert client.get("/jobs", headers=auth(tokens["root"])).json()["total"] == 2
    cancelled = client.post(f"/jobs/{job_id}/cancel", headers=auth(tokens["ada"]))
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/jobs/{job_id}/cancel", headers=auth(tokens["ada"])).status_code == 409


def test_bad_specs_are_422_with_the_field_and_big_bodies_413(api):
    client, tokens, store = api
    bad = client.post("/jobs", json={**SPEC, "train": {"lr": -1}}, headers=auth(tokens["ada"]))
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "train.lr"
    unknown = client.post("/jobs", json={**SPEC, "trian": {}}, headers=auth(tokens["ada"]))
    assert unknown.status_code == 422 and "did you mean 'train'" in unknown.json()["detail"]["message"]
    not_yaml = client.post("/jobs", content="[1, 2", headers={**auth(tokens["ada"]), "Content-Type": "text/yaml"})
    assert not_yaml.status_code == 422
    huge = client.post("/jobs", json={**SPEC, "padding": "x" * 50_000}, headers=auth(tokens["ada"]))
    assert huge.status_code == 413
    assert store.count_jobs() == 0   # nothing half-recorded


def test_admins_manage_users(api):
    client, tokens, _ = api
    assert client.post("/users", json={"name": "cy"}, headers=auth(tokens["ada"])).status_code == 403
    made = client.post("/users", json={"name": "cy"}, headers=auth(tokens["root"]))
    assert made.status_code == 201 and made.json()["token"].startswith("et_")
    assert client.get("/jobs", headers=auth(made.json()["token"])).status_code == 200
    assert client.post("/users", json={"name": "cy"}, headers=auth(tokens["root"])).status_code == 409
    names = [u["name"] for u in client.get("/users", headers=auth(tokens["root"])).json()]
    assert names == ["ada", "bob", "root", "cy"] and all("token" not in u or u["token"] is None
                                                          for u in client.get("/users", headers=auth(
                                                              tokens["root"])).json())


def test_200_concurrent_submissions_are_each_recorded_once(api):
    client, tokens, store = api
    answers: list = [None] * 200

    def submit(i):
        # One connection per thread: an httpx.Client's pool is not meant to be shared by 200 threads.
        answers[i] = httpx.post(str(client.base_url).rstrip("/") + "/jobs",
                                content=json.dumps({**SPEC, "name": f"job-{i}"}), timeout=60,
                                headers={**auth(tokens["ada"]), "Content-Type": "application/json"})

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(200)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = collections.Counter((a.status_code, a.text[:80]) for a in answers)
    assert all(a.status_code == 201 for a in answers), outcomes
    jobs = store.jobs(limit=500)
    assert sorted(j.name for j in jobs) == sorted(f"job-{i}" for i in range(200))
    by_id = {a.json()["job_id"]: a.json()["seq"] for a in answers}
    assert len(by_id) == 200 and [j.seq for j in jobs] == sorted(by_id.values())
    listed = client.get("/jobs", params={"limit": 500}, headers=auth(tokens["ada"])).json()
    assert [j["job_id"] for j in listed["jobs"]] == [j.job_id for j in jobs] and listed["total"] == 200


def test_admin_create_user_prints_the_token_alone_on_the_last_line(cli):
    code, out, _ = cli("admin", "create-user", "zed", "--admin")
    token = out.strip().splitlines()[-1]
    assert code == 0 and token.startswith("et_") and " " not in token
    user = Store(connect()).authenticate(token)
    assert user.name == "zed" and user.is_admin
    code, _, err = cli("admin", "create-user", "zed")
    assert code == 2 and "already exists" in err


def test_tokens_are_issued_listed_and_revoked(api):
    client, tokens, _ = api
    second = client.post("/users/ada/tokens", headers=auth(tokens["root"]))
    assert second.status_code == 201 and client.get("/jobs", headers=auth(second.json()["token"])).status_code == 200
    assert client.post("/users/ada/tokens", headers=auth(tokens["ada"])).status_code == 403
    assert client.post("/users/nobody/tokens", headers=auth(tokens["root"])).status_code == 404
    listed = client.get("/users/ada/tokens", headers=auth(tokens["root"])).json()
    assert [t["prefix"] for t in listed] == [tokens["ada"][:12], second.json()["token"][:12]]
    assert client.delete(f"/tokens/{tokens['ada'][:12]}", headers=auth(tokens["bob"])).status_code == 404
    assert client.delete(f"/tokens/{tokens['ada'][:12]}", headers=auth(tokens["ada"])).status_code == 204
    assert client.get("/jobs", headers=auth(tokens["ada"])).status_code == 401
    assert client.get("/jobs", headers=auth(second.json()["token"])).status_code == 200
