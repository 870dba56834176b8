"""The model registry: versions per (owner, name), aliases that move, lineage, the 0003 -> 0004
upgrade, model references (`NAME`, `NAME:V`, `NAME@ALIAS`, paths), and the registry from the
CLI and the API. Store tests run on SQLite and on PostgreSQL when ELASTRAIN_TEST_PG_URL is set."""

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from elastrain.cli.client import human_size
from elastrain.errors import UserError
from elastrain.store import Store, connect, upgrade
from elastrain.store.model_ref import ModelRef, local_owner, parse_model_ref, resolve_model_ref
from elastrain.store.repository import ModelNotFound
from tests.conftest import REPO

HASHES = {"spec_hash": "s" * 64, "data_fingerprint": "d" * 64}
IRIS_CSV = "sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n"


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def register(store, owner, name, n, **extra):
    """`n` versions of `owner`'s model `name`, at file:///NAME/VERSION."""
    latest = len([m for m in store.models(owner, name) if m.owner == owner.name])
    return [store.register_model(owner, name, f"file:///{name}/{latest + i}", {"val_accuracy": 0.9}, **HASHES,
                                 **extra) for i in range(1, n + 1)]


def test_versions_count_up_per_owner_and_name(store):
    ada, _ = store.create_user("ada")
    bob, _ = store.create_user("bob")
    assert [m.version for m in register(store, ada, "digits", 3)] == [1, 2, 3]
    assert [m.version for m in register(store, bob, "digits", 1)] == [1]
    assert [m.version for m in register(store, ada, "iris", 1)] == [1]
    assert store.model(ada, "digits").version == 3   # the latest, with neither version nor alias
    assert store.model(ada, "digits", 2).url == "file:///digits/2"
    assert store.model(bob, "digits").url == "file:///digits/1" and store.model(bob, "digits").owner == "bob"
    assert store.model(ada, "digits", 4) is None and store.model(bob, "iris") is None
    assert [(m.name, m.version) for m in store.models(ada, "digits")] == [("digits", 1), ("digits", 2), ("digits", 3)]
    assert [m.version for m in store.models(bob)] == [1]


def test_an_alias_names_one_version_and_moves(store):
    ada, _ = store.create_user("ada")
    bob, _ = store.create_user("bob")
    register(store, ada, "digits", 3)
    register(store, bob, "digits", 1)
    assert store.set_alias(ada, "digits", "production", 1).aliases == ("production",)
    store.set_alias(ada, "digits", "staging", 1)
    store.set_alias(bob, "digits", "production", 1)   # aliases are per owner
    assert [m.aliases for m in store.models(ada)] == [("production", "staging"), (), ()]
    moved = store.set_alias(ada, "digits", "production", 3)
    assert moved.version == 3 and moved.aliases == ("production",)
    assert [m.aliases for m in store.models(ada)] == [("staging",), (), ("production",)]
    assert store.model(ada, "digits", alias="production").version == 3
    assert store.model(bob, "digits", alias="production").version == 1
    assert store.model(ada, "digits", alias="canary") is None
    assert store.remove_alias(ada, "digits", "staging").version == 1
    assert store.remove_alias(ada, "digits", "staging") is None
    assert store.model(ada, "digits", 1).aliases == ()
    with pytest.raises(ModelNotFound, match="has no version 4"):
        store.set_alias(ada, "digits", "production", 4)
    with pytest.raises(ModelNotFound, match="has no version 1"):
        store.set_alias(ada, "nothing", "production", 1)
    for bad in ("Production", "123", "a" * 33, "", "pro duction", "prod/1"):
        with pytest.raises(UserError, match="is not an alias name"):
            store.set_alias(ada, "digits", bad, 1)
    assert store.model(ada, "digits", alias="production").version == 3   # failed moves changed nothing


def test_lineage_keeps_the_job_the_parent_version_and_the_size(store):
    ada, _ = store.create_user("ada")
    store.submit(ada, "train-1", {"name": "digits"})
    [trained] = register(store, ada, "digits", 1, job_id="train-1", size_bytes=40_000)
    [quantized] = register(store, ada, "digits", 1, parent_version=1, size_bytes=10_000)
    assert (trained.job_id, trained.parent_version, trained.size_bytes) == ("train-1", None, 40_000)
    assert (quantized.version, quantized.parent_version, quantized.size_bytes) == (2, 1, 10_000)
    listed = store.models(ada)
    assert [(m.job_id, m.parent_version, m.size_bytes) for m in listed] == [("train-1", None, 40_000),
                                                                            (None, 1, 10_000)]
    assert listed[0].spec_hash == "s" * 64 and listed[0].data_fingerprint == "d" * 64
    with pytest.raises(ModelNotFound, match="no version 7 to derive from"):
        register(store, ada, "digits", 1, parent_version=7)
    assert len(store.models(ada)) == 2


def test_upgrading_from_0003_keeps_the_models(database_url):
    engine = connect(database_url, migrate=False)
    upgrade(engine, "0003")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO users (name, is_admin, created_at) VALUES ('ada', false, '2026-01-01')"))
        connection.execute(text(
            "INSERT INTO models (name, version, owner_id, url, metrics, spec_hash, data_fingerprint, created_at) "
            "VALUES ('old', 1, 1, 'file:///old/1', '{\"val_accuracy\": 0.9}', 's', 'd', '2026-01-01')"))
    upgrade(engine)
    store = Store(engine)
    ada = store.user("ada")
    [old] = store.models(ada)
    assert (old.name, old.version, old.url, old.metrics) == ("old", 1, "file:///old/1", {"val_accuracy": 0.9})
    assert (old.aliases, old.parent_version, old.size_bytes) == ((), None, None)
    assert store.set_alias(ada, "old", "production", 1).aliases == ("production",)
    assert register(store, ada, "old", 1, parent_version=1)[0].version == 2
    engine.dispose()


@pytest.mark.parametrize(("given", "expected"), [
    ("iris", ModelRef(name="iris")),
    ("iris:3", ModelRef(name="iris", version=3)),
    ("iris@production", ModelRef(name="iris", alias="production")),
    ("svm.iris-2_b@stage-2", ModelRef(name="svm.iris-2_b", alias="stage-2")),
    ("runs/x/model", ModelRef(path="runs/x/model")),
    ("./iris", ModelRef(path="./iris")),
    (".hidden", ModelRef(path=".hidden")),
    ("~/models/iris", ModelRef(path="~/models/iris")),
    ("s3://bucket/models/iris", ModelRef(path="s3://bucket/models/iris")),
])
def test_a_model_reference_is_a_name_version_alias_or_path(given, expected):
    assert parse_model_ref(given) == expected


def test_an_existing_folder_is_a_path_even_without_a_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "iris").mkdir()
    assert parse_model_ref("iris") == ModelRef(path="iris")


@pytest.mark.parametrize(("given", "what"), [
    ("", "not a model name"),
    ("iris:", "'' is not a version number"),
    ("iris:x", "'x' is not a version number"),
    ("iris:0", "'0' is not a version number"),
    ("iris:-1", "'-1' is not a version number"),
    ("iris:1:2", "'1:2' is not a version number"),
    ("iris:99999999999", "is not a version number"),
    ("iris@", "'' is not an alias name"),
    ("iris@Prod", "'Prod' is not an alias name"),
    ("iris@123", "'123' is not an alias name"),
    ("iris:1@prod", "a version or an alias, not both"),
    ("my model", "not a model name"),
    (":3", "not a model name"),
])
def test_a_malformed_model_reference_is_one_clear_error(given, what):
    with pytest.raises(UserError) as raised:
        parse_model_ref(given)
    line = raised.value.line()
    assert what in line and f"model '{given}'" in line and raised.value.fix and "\n" not in line


def test_resolving_names_the_versions_and_aliases_there_are(store):
    ada, _ = store.create_user("ada")
    bob, _ = store.create_user("bob")
    register(store, ada, "iris", 2)
    register(store, bob, "secret", 1)
    store.set_alias(ada, "iris", "production", 2)
    assert resolve_model_ref(store, ada, parse_model_ref("iris")).version == 2
    assert resolve_model_ref(store, ada, parse_model_ref("iris:1")).url == "file:///iris/1"
    assert resolve_model_ref(store, ada, parse_model_ref("iris@production")).version == 2
    with pytest.raises(ModelNotFound, match=r"has no version 5 .*its versions: 1, 2; its aliases: production "
                                            r"\(version 2\)"):
        resolve_model_ref(store, ada, parse_model_ref("iris:5"))
    with pytest.raises(ModelNotFound, match="has no alias 'staging'"):
        resolve_model_ref(store, ada, parse_model_ref("iris@staging"))
    with pytest.raises(ModelNotFound, match="no model 'secret' is registered"):   # bob's, not ada's
        resolve_model_ref(store, ada, parse_model_ref("secret"))


def test_the_local_owner_is_the_os_user_created_once(store, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "local-person")
    first = local_owner(store)
    assert first.name == "local-person" and local_owner(store) == first and len(store.users()) == 1


def test_alias_list_and_predict_by_name_from_the_cli(cli, tmp_path):
    code, out, err = cli("run", REPO / "examples" / "svm_iris.yaml", "--set", "train.epochs=2", "--json")
    assert code == 0, err
    model_path = Path(last_json(out)["model_path"])
    size = sum(f.stat().st_size for f in model_path.iterdir())
    engine = connect()   # this machine's registry: ELASTRAIN_HOME/elastrain.db
    store = Store(engine)
    owner = local_owner(store)
    store.register_model(owner, "svm-iris", str(model_path), {"val_accuracy": 0.9}, **HASHES, size_bytes=size)
    store.register_model(owner, "svm-iris", str(model_path), {"val_accuracy": 0.9}, **HASHES, parent_version=1,
                         size_bytes=size // 2)
    engine.dispose()

    code, out, err = cli("models", "alias", "svm-iris", "2", "production", "--json")
    assert code == 0, err
    assert last_json(out)["version"] == 2 and last_json(out)["aliases"] == ["production"]
    code, out, _ = cli("models", "--json")
    assert [(m["version"], m["aliases"], m["parent_version"]) for m in last_json(out)["models"]] == [
        (1, [], None), (2, ["production"], 1)]
    code, out, _ = cli("models", "list")   # into a pipe: tab-separated, the header first
    header, first, second = (line.split("\t") for line in out.strip().splitlines())
    assert header == ["name", "version", "aliases", "acc / r2", "parent", "size", "job", "path"]
    assert second[:5] == ["svm-iris", "2", "production", "0.9000", "1"] and second[7] == str(model_path)
    assert first[5] == human_size(size) != ""

    (tmp_path / "x.csv").write_text(IRIS_CSV)
    code, out, _ = cli("predict", model_path, "-i", tmp_path / "x.csv", "--json")
    by_path = last_json(out)["predictions"]
    assert code == 0 and len(by_path) == 2
    for ref in ("svm-iris@production", "svm-iris:1", "svm-iris"):
        code, out, err = cli("predict", ref, "-i", tmp_path / "x.csv", "--json")
        assert code == 0 and last_json(out)["predictions"] == by_path, err

    for args, what in [(("predict", "svm-iris@staging", "-i", tmp_path / "x.csv"), "has no alias 'staging'"),
                       (("predict", "svm-iris:x", "-i", tmp_path / "x.csv"), "'x' is not a version number"),
                       (("predict", "nothing", "-i", tmp_path / "x.csv"), "no model 'nothing' is registered"),
                       (("models", "alias", "svm-iris", "9", "production"), "has no version 9"),
                       (("models", "alias", "svm-iris", "1", "Prod"), "'Prod' is not an alias name"),
                       (("models", "--json", "alias", "svm-iris", "1", "prod"), "go after the subcommand")]:
        code, _, err = cli(*args)
        assert code == 2 and what in err and len(err.strip().splitlines()) == 1, err
    code, out, _ = cli("models", "unalias", "svm-iris", "production")
    assert code == 0 and "removed svm-iris@production (it named version 2)" in out
    code, _, err = cli("models", "unalias", "svm-iris", "production")
    assert code == 2 and "has no alias 'production'" in err


def test_the_api_sets_and_removes_aliases_of_your_own_models(server, tmp_path, cli):
    url, tokens = server
    store = Store(connect(f"sqlite:///{tmp_path / 'server.db'}"))   # the server fixture's database
    ada, bob = store.user("ada"), store.user("bob")
    register(store, ada, "iris", 2)
    register(store, bob, "bobs", 1)
    api = {name: httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"})
           for name, token in tokens.items()}

    answer = api["ada"].put("/models/iris/aliases/production", json={"version": 2})
    assert answer.status_code == 200 and answer.json()["version"] == 2 and answer.json()["aliases"] == ["production"]
    api["ada"].put("/models/iris/aliases/production", json={"version": 1})   # moves it
    versions = api["ada"].get("/models/iris").json()
    assert [(m["version"], m["aliases"]) for m in versions] == [(1, ["production"]), (2, [])]
    assert {"parent_version", "size_bytes", "spec_hash", "job_id"} <= set(versions[0])
    assert [m["aliases"] for m in api["ada"].get("/models").json()] == [["production"], []]

    # bob's model is not ada's to see or alias, and asking is a 404, as if it did not exist
    assert api["ada"].put("/models/bobs/aliases/production", json={"version": 1}).status_code == 404
    assert api["ada"].get("/models/bobs").status_code == 404
    assert api["bob"].get("/models/iris").status_code == 404
    missing = api["ada"].put("/models/iris/aliases/production", json={"version": 9})
    assert missing.status_code == 404 and "has no version 9" in missing.json()["detail"]
    bad = api["ada"].put("/models/iris/aliases/Prod", json={"version": 1})
    assert bad.status_code == 422 and "is not an alias name" in bad.json()["detail"]["message"]
    assert api["ada"].put("/models/iris/aliases/prod", json={"version": 0}).status_code == 422
    assert api["ada"].put("/models/iris/aliases/prod", json={"version": 2**40}).status_code == 422
    assert api["ada"].get("/models/bad name").status_code == 422

    removed = api["ada"].delete("/models/iris/aliases/production")
    assert removed.status_code == 200 and removed.json()["version"] == 1 and removed.json()["aliases"] == []
    assert api["ada"].delete("/models/iris/aliases/production").status_code == 404

    remote = ["--server", url, "--token", tokens["ada"]]
    code, out, err = cli("models", "alias", "iris", "2", "staging", *remote, "--json")
    assert code == 0 and last_json(out)["aliases"] == ["staging"], err
    code, out, _ = cli("models", *remote, "--json")
    assert [(m["version"], m["aliases"]) for m in last_json(out)["models"]] == [(1, []), (2, ["staging"])]
    code, out, _ = cli("models", "unalias", "iris", "staging", *remote)
    assert code == 0 and "removed iris@staging (it named version 2)" in out
    code, _, err = cli("models", "alias", "bobs", "1", "staging", *remote)
    assert code == 1 and "(or it is not yours)" in err
    for client in api.values():
        client.close()
    store.engine.dispose()
