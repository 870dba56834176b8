"""What the dashboard reads, on SQLite and PostgreSQL: jobs searched, sorted and paged with their
worker-seconds; the scheduler's decisions with other users' jobs summed away; studies (Optuna's
storage in the same database) shown to the users whose jobs ran their trials; sessions. Over real
HTTP on 127.0.0.1 where the API is involved."""

import json
import time
from contextlib import closing
from datetime import timedelta

import httpx
import optuna
import pytest

from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.store.decisions import Decision, PoolState, recent_decisions, record_decision
from elastrain.store.usage import worker_seconds
from elastrain.store.web_sessions import close_session, open_session, session_user

SPEC = {"name": "dash", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"},
        "resources": {"workers": {"min": 1, "max": 4}, "cpus_per_worker": 0.5}}


def submit(store, owner, job_id, name="dash"):
    from elastrain.spec import validate_spec

    return store.submit(owner, job_id, validate_spec({**SPEC, "name": name}, "test").model_dump(mode="json"))


def test_worker_seconds_integrate_the_group_size_between_events():
    assert worker_seconds([], 100.0) == 0.0
    assert worker_seconds([(10.0, 1), (20.0, 3), (25.0, 2)], 30.0) == 10 * 1 + 5 * 3 + 5 * 2
    assert worker_seconds([(10.0, 2), (50.0, 4)], 30.0) == 40.0   # nothing counts past the end


def test_jobs_are_searched_sorted_and_paged_with_their_usage(store):
    ada, _ = store.create_user("ada")
    bob, _ = store.create_user("bob")
    for i, name in enumerate(("beta", "alpha", "gamma")):
        submit(store, ada, f"job-{i}", name)
    submit(store, bob, "job-bob", "alpha")
    assert [j.name for j in store.jobs(ada, sort="name")] == ["alpha", "beta", "gamma"]
    assert [j.job_id for j in store.jobs(ada, sort="-seq")] == ["job-2", "job-1", "job-0"]
    assert [j.job_id for j in store.jobs(ada, search="alph")] == ["job-1"]   # bob's alpha is not ada's
    assert store.count_jobs(ada, search="job-") == 3 and store.count_jobs(None, search="alpha") == 2
    assert [j.job_id for j in store.jobs(ada, search="%")] == []   # a LIKE wildcard is a plain character
    assert [j.job_id for j in store.jobs(ada, sort="name", limit=1, offset=1)] == ["job-0"]
    with pytest.raises(ValueError):
        store.jobs(ada, sort="owner")
    assert store.visible_job_ids(ada, {"job-0", "job-bob", "nothing"}) == {"job-0"}


def test_a_session_lives_while_its_token_does_and_until_it_expires(store):
    user, token = store.create_user("ada")
    assert open_session(store, "et_wrong") is None
    value, opened = open_session(store, token)
    assert opened == user and session_user(store, value) == user
    expired, _ = open_session(store, token, lifetime=timedelta(seconds=-1))
    assert session_user(store, expired) is None
    close_session(store, value)
    assert session_user(store, value) is None
    again, _ = open_session(store, token)
    store.revoke_token(token[:12])
    assert session_user(store, again) is None


def test_the_cluster_page_shows_only_a_users_own_jobs_by_name(store, tmp_path):
    ada, ada_token = store.create_user("ada")
    bob, _ = store.create_user("bob")
    _, root_token = store.create_user("root", admin=True)
    submit(store, ada, "ada-job")
    submit(store, bob, "bob-job")
    pools = (PoolState("spot", 2, 4.0, 1.2, spot=True), PoolState("on-demand", 1, 4.0, 3.0))
    record_decision(store, Decision(100.0, {"ada-job": 2}, {}, pools, 12.0, 1.0, 5.4))
    record_decision(store, Decision(160.0, {"ada-job": 1, "bob-job": 3}, {"spot": 3}, pools, 12.0, 2.0, 5.4))
    assert [d.t for d in recent_decisions(store, limit=1)] == [160.0]
    for t in (200.0, 210.0):
        record_decision(store, Decision(t, {}, {}, pools, 12.0, 0.0, 5.4), keep=3)
    assert [d.t for d in recent_decisions(store)] == [160.0, 200.0, 210.0]   # the oldest are dropped
    store.update_job("ada-job", status="running")
    store.add_events("ada-job", [{"t": time.time() - 3600, "kind": "start", "step": 0, "workers": 2, "generation": 1}])
    with serving_in_thread(create_app(store, home=tmp_path)) as url:
        ada_view = httpx.get(f"{url}/api/v1/cluster", headers={"Authorization": f"Bearer {ada_token}"}).json()
        root_view = httpx.get(f"{url}/api/v1/cluster", headers={"Authorization": f"Bearer {root_token}"}).json()
        job = httpx.get(f"{url}/api/v1/jobs/ada-job", headers={"Authorization": f"Bearer {ada_token}"}).json()
    # An hour on 2 workers of 0.5 CPU, at the cluster's 5.4 USD per hour for 12 CPUs.
    assert job["worker_seconds"] == pytest.approx(7200, rel=1e-3)
    assert job["cost_usd"] == pytest.approx(2 * 0.5 * 5.4 / 12, rel=1e-3)
    assert [d["workers"] for d in ada_view["decisions"]] == [{"ada-job": 1, "(others)": 3}, {}, {}]
    assert root_view["decisions"][0]["workers"] == {"ada-job": 1, "bob-job": 3}
    assert ada_view["pools"][0] == {"name": "spot", "spot": True, "nodes": 2, "cpus": 4.0, "price_per_hour": 1.2}
    assert (ada_view["cpus_total"], ada_view["cpus_used"], ada_view["cost_per_hour"]) == (12.0, 0.0, 5.4)


def test_a_study_is_shown_to_the_users_whose_jobs_ran_its_trials(store, database_url, tmp_path):
    ada, ada_token = store.create_user("ada")
    _, bob_token = store.create_user("bob")
    _, root_token = store.create_user("root", admin=True)
    submit(store, ada, "trial-0")
    study = optuna.create_study(study_name="lr-search", storage=database_url, direction="maximize")
    for number, (lr, value) in enumerate(((0.1, 0.8), (0.01, 0.9))):
        study.enqueue_trial({"lr": lr})
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.set_user_attr("job_id", f"trial-{number}")
        trial.report(value / 2, 1)
        study.tell(trial, value)
    optuna.create_study(study_name="local-only", storage=database_url)   # no trial is a job of this server
    with serving_in_thread(create_app(store, home=tmp_path)) as url:
        def get(path, token):
            return httpx.get(f"{url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)

        assert [s["name"] for s in get("/studies", ada_token).json()] == ["lr-search"]
        assert get("/studies", bob_token).json() == []
        assert get("/studies/lr-search", bob_token).status_code == 404
        assert sorted(s["name"] for s in get("/studies", root_token).json()) == ["local-only", "lr-search"]
        summary = get("/studies", ada_token).json()[0]
        assert summary["best_value"] == 0.9 and summary["best_params"] == {"lr": 0.01} and summary["n_trials"] == 2
        trials = get("/studies/lr-search", ada_token).json()["trials"]
    assert [(t["number"], t["state"], t["value"], t["job_id"]) for t in trials] == [
        (0, "COMPLETE", 0.8, "trial-0"), (1, "COMPLETE", 0.9, "trial-1")]
    assert trials[0]["intermediate"] == {"1": 0.4}


def test_no_studies_table_means_no_studies_and_none_is_created(store, tmp_path):
    _, token = store.create_user("root", admin=True)
    with serving_in_thread(create_app(store, home=tmp_path)) as url, closing(httpx.Client()) as client:
        assert client.get(f"{url}/api/v1/studies", headers={"Authorization": f"Bearer {token}"}).json() == []
    from sqlalchemy import inspect

    assert not inspect(store.engine).has_table("studies")


def test_a_tuned_list_choice_shows_as_the_list_not_its_index(store, database_url, tmp_path):
    from elastrain.spec.load import read_yaml
    from elastrain.tune.study import SPEC_ATTR
    from tests.conftest import REPO

    _, token = store.create_user("root", admin=True)
    spec = read_yaml((REPO / "examples" / "tune_mlp_digits.yaml").read_bytes(), "tune")[0]
    study = optuna.create_study(study_name="digits", storage=database_url, direction="maximize")
    study.set_user_attr(SPEC_ATTR, json.dumps(spec))
    study.enqueue_trial({"model.hidden": 3})
    trial = study.ask()
    trial.suggest_categorical("model.hidden", [0, 1, 2, 3])   # Optuna holds a list choice by its index
    study.tell(trial, 0.9)
    with serving_in_thread(create_app(store, home=tmp_path)) as url:
        shown = httpx.get(f"{url}/api/v1/studies/digits", headers={"Authorization": f"Bearer {token}"}).json()
    assert spec["tune"]["space"]["model.hidden"]["choices"][3] == [256, 128]
    assert shown["trials"][0]["params"] == {"model.hidden": [256, 128]}
