"""The metadata store against real databases: a SQLite file, and a real PostgreSQL server when
ELASTRAIN_TEST_PG_URL names one (`.ci/run` sets it)."""

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from elastrain.errors import UserError
from elastrain.store import Store, connect, hash_token, upgrade
from elastrain.store.schema import VERSION_TABLE, Base


def test_migrations_create_exactly_the_schema_and_keep_data_on_upgrade(database_url):
    engine = connect(database_url)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}),
                                Base.metadata) == []
    store = Store(engine)
    store.create_user("ada")
    upgrade(engine)   # again: a no-op that keeps every row
    assert [u.name for u in store.users()] == ["ada"]
    assert {"users", "tokens", "jobs", "events", "metrics", "checkpoints", "models", "model_aliases",
            VERSION_TABLE} <= set(
        inspect(engine).get_table_names())
    engine.dispose()


def test_tokens_are_hashed_at_rest_and_authenticate_their_user(store):
    ada, token = store.create_user("ada", admin=True)
    assert token.startswith("et_") and len(token) > 40
    assert store.authenticate(token) == ada and store.authenticate(token + "x") is None
    with store.engine.connect() as connection:
        stored = connection.execute(text("SELECT token_hash FROM tokens")).scalars().all()
    assert stored == [hash_token(token)] and token not in stored
    second = store.issue_token("ada")
    assert second != token and store.authenticate(second) == ada
    with pytest.raises(UserError, match="already exists"):
        store.create_user("ada")
    with pytest.raises(UserError, match="not a valid user name"):
        store.create_user("a b")


def test_users_see_only_their_own_jobs_and_admins_see_all(store):
    ada, _ = store.create_user("ada")
    bob, _ = store.create_user("bob")
    root, _ = store.create_user("root", admin=True)
    for i in range(3):
        store.submit(ada, f"ada-{i}", {"name": "a"})
    store.submit(bob, "bob-0", {"name": "b"})
    assert store.job("bob-0", ada) is None and store.job("bob-0", bob).owner == "bob"
    assert store.job("bob-0", root).job_id == "bob-0"
    assert [j.job_id for j in store.jobs(ada)] == ["ada-0", "ada-1", "ada-2"]
    assert len(store.jobs(root)) == 4 and store.count_jobs(ada) == 3
    assert [j.job_id for j in store.jobs(ada, limit=2, offset=1)] == ["ada-1", "ada-2"]
    store.update_job("ada-1", status="running", workers=2)
    assert [j.job_id for j in store.jobs(ada, status="running")] == ["ada-1"]
    assert store.job("ada-1").workers == 2


def test_concurrent_submissions_are_each_recorded_once_in_one_order(store):
    ada, _ = store.create_user("ada")
    errors = []

    def submit(i):
        try:
            store.submit(ada, f"job-{i}", {"name": "x", "i": i})
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    jobs = store.jobs(ada, limit=100)
    assert errors == [] and len(jobs) == 40
    assert sorted(j.spec["i"] for j in jobs) == list(range(40))
    assert [j.seq for j in jobs] == sorted(j.seq for j in jobs) and len({j.seq for j in jobs}) == 40


def test_events_metrics_checkpoints_and_model_versions(store):
    ada, _ = store.create_user("ada")
    bob, _ = store.create_user("bob")
    store.submit(ada, "j1", {"name": "j"})
    store.add_events("j1", [{"t": 1.0, "kind": "start", "step": 0, "workers": 2, "generation": 0},
                            {"t": 2.0, "kind": "worker_lost", "step": 40, "workers": 1, "generation": 1,
                             "duration_s": 0.05, "detail": {"lost": 1}}])
    assert [e["kind"] for e in store.events("j1")] == ["start", "worker_lost"]
    assert store.events("j1", since=1.5)[0]["detail"] == {"lost": 1}
    store.add_metrics("j1", [{"name": "val_accuracy", "step": s, "epoch": s // 10, "value": s / 100, "t": float(s)}
                             for s in (10, 20, 30)])
    assert [p["value"] for p in store.metrics("j1", since=15)["val_accuracy"]] == [0.2, 0.3]
    store.add_checkpoint("j1", 40, "file:///x/ckpt-40.pt", "ab" * 32, 1234)
    first = store.register_model(ada, "digits", "file:///m1", {"val_accuracy": 0.97}, "s" * 64, "d" * 64, "j1")
    second = store.register_model(ada, "digits", "file:///m2", {"val_accuracy": 0.98}, "s" * 64, "d" * 64)
    theirs = store.register_model(bob, "digits", "file:///b1", {}, "s" * 64, "d" * 64)
    assert (first.version, second.version, theirs.version) == (1, 2, 1) and first.job_id == "j1"
    assert [(m.name, m.version) for m in store.models(ada)] == [("digits", 1), ("digits", 2)]
    assert len(store.models()) == 3


def test_an_unreachable_database_is_one_clear_error():
    with pytest.raises(UserError, match="cannot reach the database"):
        connect("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    with pytest.raises(UserError, match="cannot use database URL"):
        connect("nosuchdb://x")


def test_upgrading_an_older_schema_keeps_its_jobs(database_url):
    engine = connect(database_url, migrate=False)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (name, is_admin, created_at) VALUES ('ada', false, '2026-01-01')"))
        connection.execute(text(
            "INSERT INTO jobs (job_id, owner_id, name, spec, status, workers, submitted_at) "
            "VALUES ('old-1', 1, 'old', '{\"name\": \"old\"}', 'queued', 0, '2026-01-01')"))
    upgrade(engine)
    job = Store(engine).job("old-1")
    assert job.spec == {"name": "old"} and job.cancel_requested is False and job.requested_workers is None
    engine.dispose()


def test_a_database_shared_with_optuna_keeps_both_schemas(database_url):
    """Older databases kept elastrain's revision in alembic_version, the table Optuna's storage
    uses: it moves to VERSION_TABLE, and a study and the jobs then live in one database."""
    import optuna

    engine = connect(database_url, migrate=False)
    upgrade(engine, "0002")
    with engine.begin() as connection:   # as elastrain left it before the move
        connection.execute(text(f"ALTER TABLE {VERSION_TABLE} RENAME TO alembic_version"))
    upgrade(engine)
    tables = set(inspect(engine).get_table_names())
    assert VERSION_TABLE in tables and "alembic_version" not in tables
    study = optuna.create_study(storage=database_url, study_name="shared")
    study.enqueue_trial({"x": 1.0})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 2), n_trials=1)
    engine.dispose()
    engine = connect(database_url)   # elastrain's schema is still current beside Optuna's
    with engine.connect() as connection:
        assert connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0005"
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() != "0004"
    assert optuna.load_study(study_name="shared", storage=database_url).best_value == 1.0
    engine.dispose()
