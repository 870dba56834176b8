"""Hostile request bodies and spec files (issue 10, fault 7): bodies and specs that nest thousands of levels
deep, or carry a large free-form value, get a 4xx (the CLI: exit 2) with a one-line reason; nothing is stored and
the server goes on answering. Each test names the kind of fault it guards against."""

import json

import httpx
import pytest

from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.spec.limits import MAX_DEPTH, MAX_SPEC_BYTES
from elastrain.store import Store, connect

SPEC = {"name": "faults-job", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"}}
SPEC_YAML = "name: faults-job\ndata: {source: 'builtin:iris'}\nmodel:\n  kind: softmax\n"
USER_MODEL = "python:my_model:build"   # a kind that takes free-form options (never imported here)


def aliases_in_options(depth: int) -> str:
    """A valid spec whose model.options holds anchors that each hold the one before: shallow text, a value
    `depth` levels deep."""
    chain = ["    x0: &x0 [1]\n", *(f"    x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, depth))]
    return "".join([SPEC_YAML.replace("softmax", USER_MODEL), "  options:\n", *chain])


@pytest.fixture
def api(tmp_path):
    """A running server with the default body limit (1 MB, above the stored-spec bound), its store, a user's token."""
    store = Store(connect(f"sqlite:///{tmp_path / 'api.db'}"))
    token = store.create_user("ada", admin=True)[1]
    with serving_in_thread(create_app(store)) as url, httpx.Client(
            base_url=f"{url}/api/v1", timeout=60, headers={"Authorization": f"Bearer {token}"}) as client:
        yield client, store


def refused(client: httpx.Client, store: Store, path: str, body: str | bytes, content_type: str) -> dict:
    """POST `body` to `path`: a 4xx whose reason is one line, nothing stored, and the server still takes a valid
    job afterwards. Returns the answer's detail."""
    stored = store.count_jobs()
    answer = client.post(path, content=body, headers={"Content-Type": content_type})
    assert 400 <= answer.status_code < 500, answer.text[:500]
    detail = answer.json()["detail"]
    message = detail["message"] if isinstance(detail, dict) else detail
    assert "\n" not in message and len(message) < 300, message
    assert store.count_jobs() == stored
    assert client.get("/jobs").status_code == 200
    assert client.post("/jobs", json=SPEC).status_code == 201
    return {"status": answer.status_code, **(detail if isinstance(detail, dict) else {"message": detail})}


def test_a_json_body_nested_2000_deep_is_422_on_every_route(api):
    """Hostile request bodies: 2,000 nested `[` as JSON (4 KB) made json.loads raise RecursionError, a 500."""
    client, store = api
    body = "[" * 2000 + "]" * 2000
    for path in ("/jobs", "/users", "/jobs/no-such-job/scale"):
        answer = refused(client, store, path, body, "application/json")
        assert answer["status"] == 422, (path, answer)
        assert f"request body:1: JSON nested deeper than {MAX_DEPTH} levels" in answer["message"]


@pytest.mark.parametrize("body", ["[" * 2000 + "]" * 2000, "a:\n  " + "- " * 3000 + "1\n",
                                  aliases_in_options(3000)], ids=["flow", "block", "aliases"])
def test_a_yaml_body_nested_thousands_deep_is_422(api, body):
    """Hostile request bodies: YAML nested thousands of levels (brackets, indentation, or aliases that each hold the
    one before) made the YAML composer or the JSON serializer recurse past Python's limit, a 500."""
    client, store = api
    answer = refused(client, store, "/jobs", body, "application/yaml")
    assert answer["status"] == 422 and f"nested deeper than {MAX_DEPTH} levels" in answer["message"], answer


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml"])
def test_model_options_nested_3000_deep_in_a_valid_spec_is_422(api, content_type):
    """Hostile request bodies: a valid spec whose free-form model.options nests 3,000 deep passed validation and
    failed when stored as JSON, a 500."""
    client, store = api
    spec = json.dumps({**SPEC, "model": {"kind": USER_MODEL, "options": {"layers": "DEEP"}}})
    answer = refused(client, store, "/jobs", spec.replace('"DEEP"', "[" * 3000 + "]" * 3000), content_type)
    assert answer["status"] == 422 and f"nested deeper than {MAX_DEPTH} levels" in answer["message"], answer


def test_a_large_shallow_free_form_value_is_422_with_its_field(api):
    """Hostile request bodies: a 200 KB string in model.options (under the 1 MB body limit) was stored in every job
    row and sent back in every listing; the stored spec is bounded by MAX_SPEC_BYTES."""
    client, store = api
    spec = {**SPEC, "model": {"kind": USER_MODEL, "options": {"blob": "x" * 200_000}}}
    answer = refused(client, store, "/jobs", json.dumps(spec), "application/json")
    assert answer["status"] == 422 and answer["field"] == "model.options.blob", answer
    assert f"over {MAX_SPEC_BYTES} bytes as JSON" in answer["message"]
    many = {**SPEC, "model": {"kind": USER_MODEL, "options": {f"k{i}": i for i in range(20_000)}}}
    assert refused(client, store, "/jobs", json.dumps(many), "application/json")["status"] == 422


@pytest.mark.parametrize("text", [SPEC_YAML + "train: " + "[" * 3000 + "]" * 3000 + "\n",
                                  aliases_in_options(3000), SPEC_YAML + "seed: " + "7" * 5000 + "\n"],
                         ids=["brackets", "aliases", "5000-digit-int"])
def test_validate_on_a_hostile_yaml_file_is_one_line_and_exit_2(cli, tmp_path, text):
    """Hostile request bodies, as files: `elastrain validate` on YAML nested 3,000 deep (or holding an integer
    longer than Python converts) printed a traceback instead of one line."""
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    code, _, err = cli("validate", path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(path) in err


def test_set_override_nested_3000_deep_is_one_line_and_exit_2(cli, tmp_path):
    """Hostile request bodies, on the command line: `--set model.options=[[[...]]]` 3,000 deep recursed in the
    YAML composer."""
    path = tmp_path / "job.yaml"
    path.write_text(SPEC_YAML)
    code, _, err = cli("validate", path, "--set", "model.options=" + "[" * 3000 + "]" * 3000)
    assert code == 2 and "Traceback" not in err and "--set model.options" in err, err
