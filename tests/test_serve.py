"""`elastrain serve` as a real HTTP server on 127.0.0.1 over a real trained model and a real
SQLite registry: the V2 protocol, /predict, errors, auth, metrics, reload on an alias move; the
dynamic batcher on its own."""

import asyncio
import json
import shutil

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_digits

from elastrain.elastic.collective import free_port
from elastrain.serve.app import ServeConfig
from elastrain.serve.batcher import DynamicBatcher
from elastrain.store.model_ref import local_registry
from elastrain.train import load_model
from tests.conftest import REPO, train_digits_model, wait_until


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A digits MLP trained for 3 epochs: its model directory."""
    return train_digits_model(tmp_path_factory, epochs=3)


def infer_body(features, datatype="FP32", name="features"):
    return {"inputs": [{"name": name, "shape": list(features.shape), "datatype": datatype,
                        "data": features.ravel().tolist()}]}


def test_the_v2_protocol_and_predict_answer_as_the_saved_model_does(digits_model, serving, cli, tmp_path):
    url = serving(ServeConfig(model=digits_model, auth=False))
    saved = load_model(digits_model)
    rows = load_digits().data[:20]
    features = saved.preprocessor.transform_rows(rows)
    assert httpx.get(f"{url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{url}/v2/models/mlp-digits").json()
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["versions"] == ["1"] and meta["outputs"][1] == {"name": "predictions", "datatype": "INT64",
                                                                 "shape": [-1]}
    answer = httpx.post(f"{url}/v2/models/mlp-digits/infer", json={**infer_body(features), "id": "r1"}).json()
    assert answer["id"] == "r1" and answer["model_version"] == "1"
    scores, predicted = answer["outputs"]
    assert scores["shape"] == [20, 10]
    np.testing.assert_allclose(np.array(scores["data"]).reshape(20, 10), saved.scores(features), atol=1e-5)
    assert predicted["data"] == saved.predict(rows)
    only = httpx.post(f"{url}/v2/models/mlp-digits/versions/1/infer",
                      json={**infer_body(features[:2]), "outputs": [{"name": "predictions"}]}).json()
    assert [o["name"] for o in only["outputs"]] == ["predictions"]
    # POST /predict with raw rows equals `elastrain predict` on the same rows.
    over_http = httpx.post(f"{url}/predict", json={"rows": rows.tolist()}).json()["predictions"]
    np.savez(tmp_path / "rows.npz", X=rows)
    code, out, err = cli("predict", digits_model, "--input", tmp_path / "rows.npz", "--json")
    assert code == 0, err
    assert over_http == json.loads(out.strip().splitlines()[-1])["predictions"]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'elastrain_serve_requests_total{code="200",endpoint="infer"} 2.0' in metrics
    assert "elastrain_serve_batch_rows_bucket" in metrics and "elastrain_serve_request_seconds_bucket" in metrics


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/v2/models/mlp-digits/infer", infer_body(np.zeros((2, 5), np.float32)), 400, "the model takes [N, 64]"),
    ("/v2/models/mlp-digits/infer", infer_body(np.zeros((2, 64), np.int32), "INT32"), 400, "send FP32"),
    ("/v2/models/mlp-digits/infer", infer_body(np.zeros((2, 64), np.float32), name="x"), 400, "named 'features'"),
    ("/v2/models/mlp-digits/infer", {"inputs": [{"name": "features", "shape": [2, 64], "datatype": "FP32",
                                                 "data": [1.0] * 5}]}, 400, "has 5 values"),
    ("/v2/models/mlp-digits/infer", {"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32",
                                                 "data": ["a"] * 64}]}, 400, "not numbers"),
    ("/v2/models/mlp-digits/infer", {**infer_body(np.zeros((1, 64), np.float32)), "outputs": [{"name": "probs"}]},
     400, "not ['probs']"),
    ("/v2/models/other/infer", infer_body(np.zeros((1, 64), np.float32)), 404, "not other"),
    ("/v2/models/mlp-digits/versions/7/infer", infer_body(np.zeros((1, 64), np.float32)), 404,
     "not mlp-digits version 7"),
    ("/v2/models/mlp-digits/infer", {"inputs": []}, 422, ""),
    ("/predict", {"rows": [[1, 2]]}, 422, "the model expects (1, 8, 8)"),
    ("/predict", {"rows": []}, 422, ""),
])
def test_bad_requests_get_a_4xx_that_says_what_to_send(digits_model, serving, path, body, status, message):
    url = serving(ServeConfig(model=digits_model, auth=False))
    answer = httpx.post(f"{url}{path}", json=body)
    assert answer.status_code == status, answer.text
    assert message in answer.text
    assert httpx.post(f"{url}/v2/models/mlp-digits/infer", content=b"{not json",
                      headers={"Content-Type": "application/json"}).status_code == 422


def test_a_token_is_needed_except_for_health_and_metrics(digits_model, serving, elastrain_home):
    with local_registry() as (store, _):
        _, token = store.create_user("ada")
    url = serving(ServeConfig(model=digits_model, auth=True))
    body = infer_body(np.zeros((1, 64), np.float32))
    assert httpx.post(f"{url}/v2/models/mlp-digits/infer", json=body).status_code == 401
    refused = httpx.post(f"{url}/v2/models/mlp-digits/infer", json=body, headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401 and refused.json()["error"] == "the token is not valid"
    allowed = httpx.post(f"{url}/v2/models/mlp-digits/infer", json=body, headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200 and httpx.get(f"{url}/metrics").status_code == 200


def test_the_server_loads_the_version_an_alias_moves_to(digits_model, serving, tmp_path):
    copy = shutil.copytree(digits_model, tmp_path / "model-v2")
    with local_registry() as (store, owner):
        for path in (digits_model, copy):
            store.register_model(owner, "digits", str(path), {}, "hash", "print")
        store.set_alias(owner, "digits", "production", 1)
    url = serving(ServeConfig(model="digits@production", auth=False, reload_s=0.1))
    assert httpx.get(f"{url}/v2/models/digits").json()["versions"] == ["1"]
    with local_registry() as (store, owner):
        store.set_alias(owner, "digits", "production", 2)
    wait_until(lambda: httpx.get(f"{url}/v2/models/digits").json()["versions"] == ["2"], timeout=30, poll=0.1)
    answer = httpx.post(f"{url}/v2/models/digits/versions/2/infer", json=infer_body(np.zeros((1, 64), np.float32)))
    assert answer.status_code == 200 and answer.json()["model_version"] == "2"


def test_the_readme_example_request_is_answered(digits_model, serving):
    section = (REPO / "README.md").read_text().split("## Serve", 1)[1].split("\n## ", 1)[0]
    payload = section.split("-d '", 1)[1].split("'", 1)[0]
    url = serving(ServeConfig(model=digits_model, auth=False))
    answer = httpx.post(f"{url}/predict", content=payload, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["predictions"] == [0]   # the first of scikit-learn's digits


def test_the_batcher_scores_blocks_waiting_together_in_one_call_in_order():
    calls = []

    def score(features):
        calls.append(len(features))
        if (features < 0).any():
            raise ValueError("negative")
        return features * 2

    async def scenario():
        batcher = DynamicBatcher(score, max_batch=8, max_wait_ms=1000)
        batcher.start()
        blocks = [np.full((n, 1), i, np.float32) for i, n in enumerate([3, 3, 1, 4])]
        results = await asyncio.gather(*(batcher.submit(block) for block in blocks))
        failed = await asyncio.gather(batcher.submit(np.full((1, 1), -1, np.float32)), return_exceptions=True)
        await batcher.stop()
        return results, failed

    results, failed = asyncio.run(scenario())
    assert calls[:2] == [7, 4]   # 3 + 3 + 1 fill a batch of 8 as far as they fit; the block of 4 opens the next
    for i, (result, n) in enumerate(zip(results, [3, 3, 1, 4], strict=True)):
        np.testing.assert_array_equal(result, np.full((n, 1), 2 * i, np.float32))
    assert isinstance(failed[0], ValueError)


def test_replicas_run_the_same_app_under_ray_serve(digits_model, ray_address):
    from ray import serve

    from elastrain.serve.replicas import APP_NAME, deploy_replicas

    port = free_port()
    deploy_replicas(ServeConfig(model=digits_model, auth=False), 2, "127.0.0.1", port)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: _answers(f"{url}/v2/health/ready"), timeout=120, poll=0.5)
        replicas = serve.status().applications[APP_NAME].deployments["model"].replica_states
        assert replicas.get("RUNNING") == 2, replicas
        saved = load_model(digits_model)
        features = saved.preprocessor.transform_rows(load_digits().data[:4])
        answers = [httpx.post(f"{url}/v2/models/mlp-digits/infer", json=infer_body(features)) for _ in range(8)]
        assert {a.status_code for a in answers} == {200}
        assert answers[-1].json()["outputs"][1]["data"] == saved.predict(load_digits().data[:4])
    finally:
        serve.delete(APP_NAME)
        serve.shutdown()


def _answers(url):
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
