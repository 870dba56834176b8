"""Property-based test of `elastrain serve` against its own OpenAPI document, with schemathesis: no
request gets a 5xx. Every operation gets the boundary cases schemathesis derives and up to 25
generated requests (seeded), to a real uvicorn server on 127.0.0.1 over a real trained model; two
thirds of the requests naming a model name the served one, so that the handlers get past their 404.
Hostile bodies (thousands of nested brackets) get a 4xx. See tests/test_api_schema.py for the why
of loading the document at import time."""

import json
import zlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from elastrain.api.server import serving_in_thread
from elastrain.serve.app import ServeConfig, create_serve_app
from tests.conftest import REPO

DOCUMENT = create_serve_app(ServeConfig(model="unused", auth=False)).openapi()
HOSTILE = {"brackets": b"[" * 5000 + b"]" * 5000,
           "deep-data": b'{"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32", "data": '
                        + b"[" * 5000 + b"]" * 5000 + b"}]}"}
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict({"seed": 20261130, "output": {"truncation": {"enabled": False}}}))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The base URL of a server over a digits MLP trained for 2 epochs, and its model's name."""
    from elastrain.sdk import Job

    home = tmp_path_factory.mktemp("home")
    model = Job.from_yaml(REPO / "examples" / "mlp_digits.yaml", {"train.epochs": 2}).run(home=home).model_path
    app = create_serve_app(ServeConfig(model=model, auth=False))
    app.debug = True   # a 500's body is the traceback
    with serving_in_thread(app, start_timeout_s=60) as base:
        assert httpx.get(f"{base}/openapi.json").json() == DOCUMENT
        yield base, "mlp-digits"


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_request_gets_a_server_error(case, served):
    base, name = served
    if isinstance((case.path_parameters or {}).get("name"), str):
        content = json.dumps([case.path_parameters, case.body], sort_keys=True, default=lambda v: type(v).__name__)
        if zlib.crc32(content.encode()) % 3:
            case.path_parameters["name"] = name
            if "version" in case.path_parameters:
                case.path_parameters["version"] = "1"
    case.call_and_validate(base_url=base, checks=[not_a_server_error])


@pytest.mark.parametrize("path", ["/v2/models/mlp-digits/infer", "/predict"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bodies_get_a_4xx(served, path, name):
    base, _ = served
    response = httpx.post(f"{base}{path}", content=HOSTILE[name], headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text[:300]
