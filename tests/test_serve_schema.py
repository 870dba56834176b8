"""Property-based test of `elastrain serve` against its own OpenAPI document, with schemathesis: no
request gets a 5xx, and every answer (the 4xx too) has a status code, content type and body the
document describes; the document is a valid OpenAPI document. Every operation gets the boundary
cases schemathesis derives and up to 25 generated requests (seeded), to a real uvicorn server on
127.0.0.1 over a real trained model; two thirds of the requests naming a model name the served one,
so that the handlers get past their 404. Hostile bodies (thousands of nested brackets) get a 4xx.
See tests/test_api_schema.py for the why of loading the document at import time."""

import json
import zlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from elastrain.api.server import serving_in_thread
from elastrain.serve.app import ServeConfig, create_serve_app
from tests.conftest import train_digits_model

DOCUMENT = create_serve_app(ServeConfig(model="unused", auth=False)).openapi()
CONFORMS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
HOSTILE = {"brackets": b"[" * 5000 + b"]" * 5000,
           "deep-data": b'{"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32", "data": '
                        + b"[" * 5000 + b"]" * 5000 + b"}]}"}
schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict({"seed": 20261130, "output": {"truncation": {"enabled": False}}}))


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    """A digits MLP trained for 2 epochs: its model directory."""
    return train_digits_model(tmp_path_factory, epochs=2)


@pytest.fixture(scope="module")
def served(digits_model):
    """The base URL of a server over the digits model, and its model's name."""
    app = create_serve_app(ServeConfig(model=digits_model, auth=False))
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
    case.call_and_validate(base_url=base, checks=CONFORMS)


@pytest.mark.parametrize("path", ["/v2/models/mlp-digits/infer", "/predict"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_bodies_get_a_4xx(served, path, name):
    base, _ = served
    response = httpx.post(f"{base}{path}", content=HOSTILE[name], headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500, response.text[:300]


@pytest.mark.parametrize("auth", [True, False])
def test_the_document_is_valid_openapi_and_declares_the_bearer_token(auth):
    """Kind 17 of issue 27: the document is valid OpenAPI; with auth, it declares the bearer token
    as the security scheme of the routes that need it, and their 401; serves no docs UI (a CDN)."""
    app = create_serve_app(ServeConfig(model="unused", auth=auth))
    document = app.openapi()
    validate(document)
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert {"400", "404", "413", "422"} <= set(infer["responses"])
    assert infer["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"}
    assert ("401" in infer["responses"]) == auth and ("security" in infer) == auth
    assert ("securitySchemes" in document["components"]) == auth
    assert "security" not in document["paths"]["/v2/health/live"]["get"]
    assert app.docs_url is None and app.redoc_url is None


def test_real_4xx_answers_conform_to_the_document(digits_model, tmp_path):
    """Kind 17 of issue 27: the 401, 404, 413 and 422 answers of a server with auth have the status
    codes and the {"error", "detail"} bodies its document describes."""
    from elastrain.store import Store, connect

    db_url = f"sqlite:///{tmp_path / 'serve.db'}"
    token = {"Authorization": f"Bearer {Store(connect(db_url)).create_user('ada')[1]}"}
    app = create_serve_app(ServeConfig(model=digits_model, db_url=db_url, max_body_bytes=10_000))
    operation = schemathesis.openapi.from_dict(app.openapi())["/v2/models/{name}/infer"]["POST"]
    requests = [({}, "mlp-digits", {"inputs": []}),                                          # 401
                (token, "other", {"inputs": []}),                                            # 404
                (token, "mlp-digits", {"inputs": []}),                                       # 422
                (token, "mlp-digits", {"inputs": [{"name": "x" * 20_000, "shape": [1], "datatype": "FP32",
                                                   "data": [0]}]})]                          # 413
    codes = []
    with serving_in_thread(app, start_timeout_s=60) as base:
        for headers, name, body in requests:
            case = operation.Case(path_parameters={"name": name}, body=body, headers=headers,
                                  media_type="application/json")
            codes.append(case.call_and_validate(base_url=base, checks=CONFORMS).status_code)
    assert codes == [401, 404, 422, 413]
