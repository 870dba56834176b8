"""Property-based test of the REST API against its own OpenAPI document, with schemathesis: no request gets a 5xx,
and every answer (the 4xx too) has a status code, content type and body the document describes; the document is
valid OpenAPI and declares the bearer token.

For every operation in /api/v1/openapi.json, schemathesis sends the boundary cases it derives from the schema and
up to 25 generated requests (seeded, so CI runs are reproducible), as an admin, to a real uvicorn server on
127.0.0.1 over a fresh SQLite store. Two thirds of the requests to /jobs/{job_id}/... go to real jobs (one queued,
soon cancelled, and one running), so that the handlers get past their 404. The server runs in this process in
debug mode, so a 500's body, and with it the failure report, carries the server's traceback.

Hostile request bodies are sent to every operation that takes a body, in each of its media types, through the same
schemathesis cases: thousands of nested brackets, a valid spec whose free-form model.options nests thousands deep,
YAML aliases that nest deep or expand a 1 KB text to a billion items. Each gets a 4xx, not a 5xx.

The document is loaded at import time (pytest makes one test per operation at collection) from an app over an
unused store, and the fixture checks that the server serves exactly that document. We don't load it from the
running server with `schemathesis.pytest.from_fixture`: schemathesis 4.32.5 sets `Function._nodeid`, which
pytest 9.2 no longer has.
"""

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

from elastrain.api import create_app
from elastrain.api.server import serving_in_thread
from elastrain.store import Store, connect

DOCUMENT = create_app(Store(connect("sqlite://", migrate=False))).openapi()


@schemathesis.check
def error_schema_conformance(ctx, response, case):
    """schemathesis' response_schema_conformance for 4xx answers. (A 200's datetimes carry no UTC
    offset, which the date-time format requires: left for another change.)"""
    if response.status_code >= 400:
        return response_schema_conformance(ctx, response, case)
    return None


CONFORMS = [not_a_server_error, status_code_conformance, content_type_conformance, error_schema_conformance]
SPEC = {"name": "schema-job", "data": {"source": "builtin:iris"}, "model": {"kind": "softmax"},
        "resources": {"workers": {"min": 1, "max": 4}}}
_OPTIONS = "name: schema-job\ndata: {source: 'builtin:iris'}\nmodel:\n  kind: softmax\n  options:\n"
HOSTILE_BODIES = {
    "brackets": b"[" * 2000 + b"]" * 2000,
    "deep-options": json.dumps({**SPEC, "model": {"kind": "softmax", "options": {"x": 0}}}).replace(
        "0}", "[" * 3000 + "]" * 3000 + "}").encode(),
    "alias-chain": (_OPTIONS + "    a0: &a0 [1]\n" + "".join(f"    a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 700))
                    ).encode(),
    "alias-bomb": (_OPTIONS + "    a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))).encode(),
}

@schemathesis.serializer("application/zip")
def _zip_body(context, value) -> bytes:
    """A bundle upload (`POST /bundles`) as the bytes generated for it: rarely a zip, which is the point."""
    return value if isinstance(value, bytes) else json.dumps(value).encode()


schema = schemathesis.openapi.from_dict(
    DOCUMENT, config=schemathesis.Config.from_dict({"seed": 20240611, "output": {"truncation": {"enabled": False}}}))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The base URL of a running server, an admin's auth header, and the ids of a queued and a running job."""
    store = Store(connect(f"sqlite:///{tmp_path_factory.mktemp('schema') / 'api.db'}"))
    headers = {"Authorization": f"Bearer {store.create_user('root', admin=True)[1]}"}
    app = create_app(store, max_body=20_000, home=tmp_path_factory.mktemp("home"))
    app.debug = True   # a 500's body is the traceback
    with serving_in_thread(app) as base:
        assert httpx.get(f"{base}/api/v1/openapi.json").json() == DOCUMENT
        job_ids = [httpx.post(f"{base}/api/v1/jobs", json=SPEC, headers=headers).raise_for_status().json()["job_id"]
                   for _ in range(2)]
        store.update_job(job_ids[1], status="running")
        yield base, headers, job_ids


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_no_request_gets_a_server_error(case, server):
    base, headers, job_ids = server
    if isinstance((case.path_parameters or {}).get("job_id"), str):
        # A function of the case's content (not a counter), so that Hypothesis replays a failure exactly.
        content = json.dumps([case.path_parameters, case.query, case.body], sort_keys=True,
                             default=lambda value: type(value).__name__)
        pick = zlib.crc32(content.encode()) % (len(job_ids) + 1)
        if pick:
            case.path_parameters["job_id"] = job_ids[pick - 1]
    case.call_and_validate(base_url=base, headers=headers, checks=CONFORMS)


BODY_CASES = [(path, method.upper(), media_type, name)
              for path, methods in DOCUMENT["paths"].items() for method, operation in methods.items()
              for media_type in operation.get("requestBody", {}).get("content", {}) for name in HOSTILE_BODIES]


@pytest.mark.parametrize(("path", "method", "media_type", "name"), BODY_CASES,
                         ids=[" ".join(case) for case in BODY_CASES])
def test_hostile_request_bodies_get_a_4xx(path, method, media_type, name, server):
    """Hostile request bodies: nesting thousands deep or expanding to a billion items, to every operation with a
    body, get a 4xx (a RecursionError was a 500)."""
    base, headers, job_ids = server
    operation = schema[path][method]
    case = operation.Case(body=HOSTILE_BODIES[name], media_type=media_type,
                          path_parameters={p.name: job_ids[1] for p in operation.path_parameters})
    response = case.call_and_validate(base_url=base, headers=headers, checks=[not_a_server_error])
    assert 400 <= response.status_code < 500, response.text[:300]


def test_the_document_is_valid_openapi_with_the_real_error_bodies_and_the_bearer_token():
    """Kind 17 of issue 27: the document validates, declares the bearer token for every route, and
    describes 401/404/422 with the bodies the API sends ({"detail": "line"}; a 422's
    {"detail": {"message", "field"}}), not FastAPI's array."""
    validate(DOCUMENT)
    assert DOCUMENT["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert "HTTPValidationError" not in DOCUMENT["components"]["schemas"]
    job = DOCUMENT["paths"]["/api/v1/jobs/{job_id}"]["get"]
    assert job["security"] == [{"bearer": []}] and {"401", "404", "422"} <= set(job["responses"])
    schema = job["responses"]["422"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/FieldErrorOut"}
    assert set(DOCUMENT["components"]["schemas"]["FieldError"]["properties"]) == {"message", "field"}


def test_real_4xx_answers_conform_to_the_document_and_no_docs_ui_is_served(server):
    """Kind 17 of issue 27: real 401, 404, 413 and 422 answers have the codes and bodies the document
    describes; the document answers without a token (README: it holds no data), and there is no
    Swagger UI (it loaded from a CDN)."""
    base, headers, job_ids = server
    get_job, submit = schema["/api/v1/jobs/{job_id}"]["GET"], schema["/api/v1/jobs"]["POST"]
    cases = [(get_job.Case(path_parameters={"job_id": job_ids[0]}), {}, 401),
             (get_job.Case(path_parameters={"job_id": "no-such-job"}), headers, 404),
             (schema["/api/v1/jobs"]["GET"].Case(query={"limit": 0}), headers, 422),
             (submit.Case(body={"name": "x", "model": {"kind": "nope"}}, media_type="application/json"), headers, 422),
             (submit.Case(body={"name": "x" * 30_000}, media_type="application/json"), headers, 413)]
    for case, sent, status in cases:
        response = case.call_and_validate(base_url=base, headers=sent, checks=CONFORMS)
        assert response.status_code == status, response.text[:300]
    assert httpx.get(f"{base}/api/v1/openapi.json").status_code == 200
    assert httpx.get(f"{base}/api/v1/docs").status_code in (401, 404)
