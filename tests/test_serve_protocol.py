"""`elastrain serve` at the edges of its protocol, over real HTTP on 127.0.0.1 and real trained
models: numbers past float32's range (finding 15 of issue 27), the KServe V2 protocol as a real
client (tritonclient) speaks it, in JSON and in binary tensor data, its error bodies, the body size
limit and the metrics of refused requests (finding 16)."""

import json
import math

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_digits
from tritonclient.utils import InferenceServerException

from elastrain.api.server import serving_in_thread
from elastrain.serve.app import ServeConfig, create_serve_app
from elastrain.store.model_ref import local_registry
from elastrain.train import load_model
from tests.conftest import train_digits_model

LIMIT = 200_000   # bytes of body the limited server takes


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A digits MLP (images: features named by index) trained for 2 epochs: its model directory."""
    return train_digits_model(tmp_path_factory, epochs=2)


@pytest.fixture(scope="module")
def sizes_model(tmp_path_factory):
    """A softmax classifier of a CSV with named columns and text labels: its model directory."""
    from elastrain.sdk import Job

    folder = tmp_path_factory.mktemp("sizes")
    rng = np.random.default_rng(0)
    lines = ["width,height,label"]
    for _ in range(120):
        width, height = rng.uniform(1, 10, 2)
        lines.append(f"{width:.3f},{height:.3f},{'large' if width + height > 11 else 'small'}")
    (folder / "sizes.csv").write_text("\n".join(lines) + "\n")
    spec = {"name": "sizes", "data": {"source": f"csv:{folder / 'sizes.csv'}", "target": "label"},
            "model": {"kind": "softmax"}, "train": {"epochs": 3, "batch_size": 16}}
    return Job(spec).run(home=folder / "home").model_path


@pytest.fixture(scope="module")
def digits_url(digits_model):
    """A server over the digits model, without auth, taking bodies up to LIMIT bytes."""
    with serving_in_thread(create_serve_app(ServeConfig(digits_model, auth=False, max_body_bytes=LIMIT)),
                           start_timeout_s=60) as url:
        yield url


@pytest.fixture(scope="module")
def sizes_url(sizes_model):
    with serving_in_thread(create_serve_app(ServeConfig(sizes_model, auth=False)), start_timeout_s=60) as url:
        yield url


def strict_json(text: str):
    """`text` parsed as RFC 8259 JSON: Infinity and NaN are refused, as strict parsers do."""
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def infer_body(values, datatype="FP32"):
    values = np.asarray(values)
    return {"inputs": [{"name": "features", "shape": list(values.shape), "datatype": datatype,
                        "data": values.ravel().tolist()}]}


# --- 15: numbers finite in float64 but not in float32 -------------------------------------------

@pytest.mark.parametrize("value", [1e300, -1e39, 3.5e38])
def test_v2_infer_refuses_values_past_float32_naming_row_and_column(digits_url, value):
    """Kind 15: a value finite in float64 but past float32's range gets 422 naming where it is, not
    200 with Infinity in the body."""
    features = np.zeros((2, 64))
    features[1, 7] = value
    answer = httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", json=infer_body(features, "FP64"))
    assert answer.status_code == 422, answer.text
    assert "row 1 column 7" in strict_json(answer.text)["error"]


def test_v2_infer_refuses_a_row_the_model_overflows_on(digits_url):
    """Kind 15: values within float32 that overflow inside the model (inf or NaN scores) get 422
    naming the row and its largest column, never non-JSON output."""
    features = np.zeros((3, 64), np.float32)
    features[2] = 3e38
    features[2, 5] = 3.3e38
    answer = httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", json=infer_body(features))
    assert answer.status_code == 422, answer.text
    assert "row 2" in answer.text and "column 5" in strict_json(answer.text)["error"]


@pytest.mark.parametrize("value", [1e300, -1e39])
def test_predict_refuses_values_past_float32_naming_the_column(sizes_url, value):
    """Kind 15: POST /predict with a value finite in float64 but not in float32 gets 422 naming the
    row and column, not 200 with null predictions."""
    answer = httpx.post(f"{sizes_url}/predict", json={"rows": [{"width": 2, "height": 3},
                                                               {"width": 4, "height": value}]})
    assert answer.status_code == 422, answer.text
    error = strict_json(answer.text)["error"]
    assert "row 1" in error and "'height'" in error


@pytest.mark.parametrize("value", [3e38, -3.4e38, 1e38])
def test_predict_at_float32s_edge_answers_json_or_names_the_column(sizes_url, value):
    """Kind 15: values within float32 but near its edge get either predictions in strict JSON or
    a 422 naming the row and column, never Infinity, NaN or null."""
    answer = httpx.post(f"{sizes_url}/predict", json={"rows": [{"width": 2, "height": 3},
                                                               {"width": value, "height": value}]})
    body = strict_json(answer.text)
    if answer.status_code == 422:
        assert "row 1" in body["error"] and "'width'" in body["error"]
    else:
        assert answer.status_code == 200 and None not in body["predictions"]


@pytest.mark.parametrize("value", ["1e300", "-1e39", "3e38", "3.4e38"])
def test_predict_cli_never_prints_infinity(sizes_model, cli, tmp_path, value):
    """Kind 15: `elastrain predict --json --proba` on values past (or at the edge of) float32's
    range prints strict JSON, or exits with one line naming the row and column; never Infinity or
    NaN."""
    rows = tmp_path / "rows.csv"
    rows.write_text(f"width,height\n2,3\n{value},{value}\n")
    code, out, err = cli("predict", sizes_model, "--input", rows, "--json", "--proba")
    assert "Infinity" not in out and "NaN" not in out
    if code:
        assert "'width'" in err and "row 1" in err and "Traceback" not in err
    else:
        printed = strict_json(out.strip().splitlines()[-1])
        assert len(printed["predictions"]) == 2 and all(0 <= p <= 1 for row in printed["probabilities"] for p in row)
    if value in ("1e300", "-1e39"):
        assert code != 0


def test_predict_cli_answers_rows_within_range(sizes_model, cli, tmp_path):
    fine = tmp_path / "fine.csv"
    fine.write_text("width,height\n2,3\n9,8\n")
    code, out, err = cli("predict", sizes_model, "--input", fine, "--json", "--proba")
    assert code == 0, err
    assert strict_json(out.strip().splitlines()[-1])["predictions"] == ["small", "large"]


# --- 16: the KServe V2 protocol as tritonclient speaks it --------------------------------------

def triton_infer(url, features, binary, request_id=""):
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    item = triton.InferInput("features", list(features.shape), "FP32")
    item.set_data_from_numpy(features, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("scores", "predictions")]
    try:
        return client.infer("mlp-digits", [item], outputs=outputs, request_id=request_id)
    finally:
        client.close()


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_gets_the_saved_models_answers(digits_model, digits_url, binary):
    """Kind 16: tritonclient, in JSON and in its default binary tensor data mode, gets the scores
    and predictions the saved model gives."""
    saved = load_model(digits_model)
    rows = load_digits().data[:5]
    features = saved.preprocessor.transform_rows(rows)
    result = triton_infer(digits_url, features, binary, request_id="r7")
    np.testing.assert_allclose(result.as_numpy("scores"), saved.scores(features), atol=1e-5)
    assert result.as_numpy("predictions").tolist() == saved.predict(rows)
    assert result.get_response()["id"] == "r7"
    client = triton.InferenceServerClient(digits_url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_model_ready("mlp-digits")
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        # tritonclient's defaults: no outputs named, so the request asks for every output as binary data
        item = triton.InferInput("features", list(features.shape), "FP32")
        item.set_data_from_numpy(features)
        default = client.infer("mlp-digits", [item])
        assert default.as_numpy("predictions").tolist() == saved.predict(rows)
        assert "id" not in default.get_response()
        narrow = triton.InferInput("features", [1, 5], "FP32")
        narrow.set_data_from_numpy(np.zeros((1, 5), np.float32), binary_data=binary)
        with pytest.raises(InferenceServerException, match=r"the model takes \[N, 64\]"):
            client.infer("mlp-digits", [narrow])
    finally:
        client.close()


def test_binary_text_labels_and_fp64_input(sizes_model, sizes_url):
    """Kind 16: BYTES outputs (text labels) in binary data (a 4-byte length before each), and an
    FP64 input sent as binary data."""
    saved = load_model(sizes_model)
    features = saved.preprocessor.transform_rows([[2.0, 3.0], [9.0, 8.0]]).astype(np.float64)
    client = triton.InferenceServerClient(sizes_url.removeprefix("http://"))
    try:
        item = triton.InferInput("features", list(features.shape), "FP64")
        item.set_data_from_numpy(features)
        result = client.infer("sizes", [item])
    finally:
        client.close()
    assert [label.decode() for label in result.as_numpy("predictions")] == ["small", "large"]


def test_a_binary_body_that_does_not_add_up_gets_a_4xx_that_says_so(digits_url):
    """Kind 16: binary data shorter than declared, or an Inference-Header-Content-Length past the
    body, is refused with a line that says what is wrong."""
    head = {"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32",
                        "parameters": {"binary_data_size": 256}}]}
    text = json.dumps(head).encode()
    short = httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", content=text + b"\0" * 100,
                       headers={"Inference-Header-Content-Length": str(len(text))})
    assert short.status_code == 400 and "declares 256 bytes" in short.json()["error"]
    past = httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", content=text,
                      headers={"Inference-Header-Content-Length": str(len(text) + 5)})
    assert past.status_code == 422 and "Inference-Header-Content-Length" in past.json()["error"]
    missing = httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", content=text + b"\0" * 256)
    assert missing.status_code == 422   # no header: the body is taken as JSON, and it is not


def test_id_is_returned_only_when_the_request_has_one(digits_url):
    """Kind 16: `id` is a string given back when the request has one, absent otherwise (not null)."""
    body = infer_body(np.zeros((1, 64), np.float32))
    assert "id" not in httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", json=body).json()
    assert httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", json={**body, "id": "a"}).json()["id"] == "a"


def test_every_error_carries_the_protocols_error_key(digits_url):
    """Kind 16: Starlette's own 404 (no such route) and 405 (wrong method) answer the protocol's
    {"error": ...} body, as the server's own errors do."""
    for response in (httpx.get(f"{digits_url}/v2/nothing/here"), httpx.get(f"{digits_url}/predict"),
                     httpx.get(f"{digits_url}/v2/models/other")):
        assert response.status_code in (404, 405), response.text
        assert isinstance(response.json()["error"], str) and response.json()["error"]


def test_bodies_over_the_limit_get_413_and_a_422_never_echoes_the_input(digits_url):
    """Kind 16: a body over the server's limit gets 413 (declared, or sent without a length), and a
    422 quotes at most a line of a large input."""
    big = json.dumps(infer_body(np.full((400, 64), 0.123456789))).encode()
    assert len(big) > LIMIT
    for headers, content in (({}, big), ({"Transfer-Encoding": "chunked"}, iter([big[:LIMIT], big[LIMIT:]]))):
        answer = httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", content=content,
                            headers={"Content-Type": "application/json", **headers})
        assert answer.status_code == 413 and "--max-body-mb" in answer.json()["error"]
    echo = httpx.post(f"{digits_url}/predict", json={"rows": "x" * 150_000})
    assert echo.status_code == 422 and len(echo.content) < 2_000, echo.text[:300]
    typo = httpx.post(f"{digits_url}/v2/models/mlp-digits/infer", json={"inputs": [{"name": "x" * 150_000}]})
    assert typo.status_code == 422 and len(typo.content) < 2_000, typo.text[:300]


def test_refused_requests_are_counted_in_metrics(digits_model, elastrain_home):
    """Kind 16: 401, 404, 413 and 422 answers are counted in /metrics by endpoint and code."""
    with local_registry() as (store, _):
        _, token = store.create_user("ada")
    app = create_serve_app(ServeConfig(digits_model, auth=True, max_body_bytes=LIMIT))
    with serving_in_thread(app, start_timeout_s=60) as url:
        auth = {"Authorization": f"Bearer {token}"}
        httpx.post(f"{url}/v2/models/mlp-digits/infer", json=infer_body(np.zeros((1, 64))))   # 401
        httpx.post(f"{url}/v2/models/other/infer", json=infer_body(np.zeros((1, 64))), headers=auth)   # 404
        httpx.post(f"{url}/predict", json={"rows": [[1, 2]]}, headers=auth)   # 422
        httpx.post(f"{url}/predict", content=b"[" * (LIMIT + 1), headers=auth)   # 413
        metrics = httpx.get(f"{url}/metrics").text
    for endpoint, code in (("infer", 401), ("infer", 404), ("predict", 422), ("predict", 413)):
        line = f'elastrain_serve_requests_total{{code="{code}",endpoint="{endpoint}"}} 1.0'
        assert line in metrics, (line, [m for m in metrics.splitlines() if m.startswith("elastrain_serve_requests")])
    assert math.isfinite(float(metrics.split("elastrain_serve_request_seconds_count{endpoint=\"predict\"} ")[1]
                               .split()[0]))
