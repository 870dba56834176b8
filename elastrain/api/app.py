"""The REST control plane under /api/v1: jobs, their events, metrics and logs, models and their
aliases, users.

Every route but the OpenAPI document needs `Authorization: Bearer TOKEN`. A user sees and acts
on their own jobs and models only (anything else is 404, as if it did not exist); an admin sees
all and manages users. An error's body is `{"detail": "line"}`, or `{"detail": {"message",
"field"}}` for a 422; the OpenAPI document says which answer which.
"""
# No `from __future__ import annotations` here: FastAPI must see the real dependency types of
# the routes defined inside create_app.


import json
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware

from elastrain import bundle as bundles
from elastrain.api.federated import MAX_UPDATE_BYTES, federated_router
from elastrain.api.studies import TrialView, load_studies
from elastrain.errors import UserError
from elastrain.optimize.report import REPORT_FILE
from elastrain.runs import JobResult, JobState, JobStatus, RunFolder, new_job_id
from elastrain.spec import validate_spec
from elastrain.spec.limits import check_json_depth
from elastrain.spec.load import read_yaml
from elastrain.store import JobInfo, ModelInfo, Store, UserInfo
from elastrain.store.decisions import recent_decisions
from elastrain.store.repository import JOB_SORTS, JOB_STATES, MAX_VERSION, ModelNotFound, check_alias
from elastrain.store.usage import jobs_worker_seconds
from elastrain.web import dashboard_router
from elastrain.web.auth import cookie_user

API = "/api/v1"
MAX_BODY_BYTES = 1_000_000
MAX_OFFSET = 2**62   # past it, SQLite cannot hold the number (a 5xx before)
LOG_CHUNK_BYTES = 256_000
STATUS_PATTERN = f"^({'|'.join(JOB_STATES)})$"
SORT_PATTERN = f"^({'|'.join(JOB_SORTS)})$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"   # a job's name, which its model is registered under


class JobOut(BaseModel):
    """A job as the API shows it."""

    job_id: str
    seq: int
    owner: str
    name: str
    status: JobState = Field(description="queued, running, or how it ended: succeeded, failed, cancelled")
    workers: int
    requested_workers: int | None = None
    cancel_requested: bool = False
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str | None = None
    spec: dict[str, Any]
    min_workers: int = 1
    max_workers: int = 1
    progress: float | None = Field(None, description="fraction of the job's steps done, 0..1")
    eta_s: float | None = Field(None, description="seconds left at the current throughput")
    worker_seconds: float = Field(0.0, description="worker-seconds used so far, from the job's events")
    cost_usd: float | None = Field(None, description="worker CPU-hours so far at the cluster's mean price "
                                                     "per CPU-hour (None on a cluster without prices)")


class JobList(BaseModel):
    """One page of jobs."""

    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class Submitted(BaseModel):
    """What a submission created."""

    job_id: str
    seq: int
    status: JobState


class ScaleRequest(BaseModel):
    """A resize request."""

    workers: int = Field(ge=1, le=4096)


class LogChunk(BaseModel):
    """Part of a job's log, and where the next part starts."""

    text: str
    offset: int


class UserIn(BaseModel):
    """A user to create."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    admin: bool = False


class UserOut(BaseModel):
    """A user, with a token when one was just issued (shown once)."""

    name: str
    admin: bool
    token: str | None = None


class TokenOut(BaseModel):
    """A token as listings show it: its first characters."""

    prefix: str
    created_at: datetime
    revoked: bool


class ModelOut(BaseModel):
    """A registered model version."""

    name: str
    version: int
    owner: str
    job_id: str | None
    url: str
    metrics: dict[str, Any]
    spec_hash: str
    data_fingerprint: str
    created_at: datetime
    aliases: list[str] = Field(default_factory=list)
    parent_version: int | None = None
    size_bytes: int | None = None
    report: dict[str, Any] | None = Field(None, description="the optimize report of an optimized version")


class PoolOut(BaseModel):
    """A node pool: `nodes` held of `cpus` CPUs each, at `price_per_hour` USD per node-hour."""

    name: str
    spot: bool
    nodes: int
    cpus: float
    price_per_hour: float


class DecisionOut(BaseModel):
    """An allocation of the scheduler: workers per job (jobs the viewer may not see are summed
    under `(others)`), nodes requested per pool, CPUs used and held."""

    t: float
    workers: dict[str, int]
    nodes: dict[str, int]
    cpus_used: float
    cpus_total: float


class ClusterOut(BaseModel):
    """The cluster as the scheduler last saw it, and its recent decisions (oldest first)."""

    pools: list[PoolOut]
    cpus_total: float
    cpus_used: float
    cost_per_hour: float
    decisions: list[DecisionOut]


class StudySummary(BaseModel):
    """A hyperparameter study at a glance."""

    name: str
    direction: str
    n_trials: int
    best_value: float | None
    best_params: dict[str, Any] | None


class StudyOut(BaseModel):
    """A study and its trials."""

    name: str
    direction: str
    trials: list[TrialView]


class AliasIn(BaseModel):
    """The version an alias is to name."""

    version: int = Field(ge=1, le=MAX_VERSION)


class Bundled(BaseModel):
    """An uploaded bundle of a job's local code and data, by content hash."""

    bundle: str
    bytes: int


class ErrorOut(BaseModel):
    """The body of a 4xx but 422: one line."""

    detail: str


class FieldError(BaseModel):
    """What is wrong, and in which field of the request (None: the request as a whole)."""

    message: str
    field: str | None


class FieldErrorOut(BaseModel):
    """The body of a 422: what is wrong, and where."""

    detail: FieldError


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of these 4xx/5xx codes with their bodies (`ErrorOut`, a 422's `FieldErrorOut`)."""
    said = {400: "The body cannot be parsed", 401: "No token, or not a valid one", 403: "Only an admin may do this",
            404: "No such thing that you may see", 409: "The job or user is not in a state that allows this",
            413: "The body is over the server's limit", 422: "A value is not valid (the field says which)",
            503: "Try again"}
    return {code: {"model": FieldErrorOut if code == 422 else ErrorOut, "description": said[code]} for code in codes}


def _document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """`document` with what every route of the API may answer besides its own errors: 401 and the
    bearer token (every route), 404 (a route with path parameters), 400 and 413 (a route that
    takes a body), and a 422 in the shape the API sends."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (ErrorOut, FieldError, FieldErrorOut):
        schemas[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):   # FastAPI's 422 shape, which the API never sends
        schemas.pop(name, None)
    document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    field_error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/FieldErrorOut"}}}}
    for path, item in document["paths"].items():
        for operation in item.values():
            responses = operation["responses"]
            added = {"401": "No token, or not a valid one"}
            if "{" in path:
                added["404"] = "No such thing that you may see"
            if "requestBody" in operation:
                added |= {"400": "The body cannot be parsed", "413": "The body is over the server's limit"}
            for code, description in added.items():
                responses.setdefault(code, {"description": description, **error})
            responses["422"] = {"description": "A value is not valid (the field says which)", **field_error}
            operation["security"] = [{"bearer": []}]
    return document


class BodyGuard(BaseHTTPMiddleware):
    """Refuses, before any route parses it, a request body over `limit` bytes (413; a bundle upload
    may have up to `bundles.MAX_BUNDLE_BYTES`, a federated client's update `MAX_UPDATE_BYTES`) and
    a JSON body nested deeper than `MAX_DEPTH` (422: json.loads would recurse once per level)."""

    def __init__(self, app, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def dispatch(self, request: Request, call_next):
        path = request.url.path
        limit = bundles.MAX_BUNDLE_BYTES if path == f"{API}/bundles" else \
            MAX_UPDATE_BYTES if path.startswith(f"{API}/jobs/") and path.endswith("/update") else self.limit
        too_large = JSONResponse({"detail": f"request body over {limit} bytes"}, status_code=413)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_large
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return too_large
        content_type = request.headers.get("content-type", "")
        if body and (not content_type or "json" in content_type.lower()):   # what FastAPI parses as JSON
            try:
                check_json_depth(body, "request body")
            except UserError as exc:
                return JSONResponse({"detail": {"message": exc.line(), "field": None}}, status_code=422)
        request._body = body   # starlette hands the cached body on downstream
        return await call_next(request)


def create_app(store: Store, max_body: int = MAX_BODY_BYTES, home: Path | None = None) -> FastAPI:
    """The API over `store`; job logs are read from the run folders under `home`."""
    # The document is public (it describes the routes and holds no data); no docs UI: Swagger UI
    # would load from a CDN, which offline machines cannot reach.
    app = FastAPI(title="elastrain", version="1", openapi_url=f"{API}/openapi.json", docs_url=None, redoc_url=None)
    app.add_middleware(BodyGuard, limit=max_body)

    def openapi() -> dict[str, Any]:
        """FastAPI's document with the errors the API really answers, and the bearer token."""
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(get_openapi(title=app.title, version=app.version,
                                                              routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A 422 in the API's one shape: the first problem and its field, never the input echoed."""
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"][1:]) or None
        return JSONResponse({"detail": {"message": f"{field}: {first['msg']}" if field else first["msg"],
                                        "field": field}}, status_code=422)
    router = APIRouter(prefix=API)

    def current_user(request: Request, authorization: Annotated[str | None, Header()] = None) -> UserInfo:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            user = store.authenticate(token.strip())
        else:   # the dashboard's pages send their session cookie
            user = cookie_user(store, request)
        if user is None:
            raise HTTPException(401, "missing or invalid token; send Authorization: Bearer TOKEN",
                                headers={"WWW-Authenticate": "Bearer"})
        return user

    def admin_user(user: Annotated[UserInfo, Depends(current_user)]) -> UserInfo:
        if not user.is_admin:
            raise HTTPException(403, "only an admin may do this")
        return user

    User = Annotated[UserInfo, Depends(current_user)]
    Admin = Annotated[UserInfo, Depends(admin_user)]

    def visible_job(job_id: str, user: UserInfo) -> JobInfo:
        job = store.job(job_id, user)
        if job is None:
            raise HTTPException(404, f"no job '{job_id}'")
        return job

    @router.post("/jobs", status_code=201, response_model=Submitted, responses=_errors(503),
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/json": {"schema": {"type": "object"}},
                     "application/yaml": {"schema": {"type": "string"}}}}})
    async def submit(request: Request, user: User,
                     bundle: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$",
                                                         description="a bundle POSTed to /bundles")] = None,
                     ) -> Submitted:
        """Queue a job; the body is its spec as JSON or YAML (as `elastrain validate` checks it),
        with the bundle of local code and data it needs, if any."""
        raw = _parse_spec_body(await request.body(), request.headers.get("content-type", "").lower())
        try:
            spec = validate_spec(raw, "request body")
        except UserError as exc:
            raise HTTPException(422, {"message": exc.line(), "field": exc.field}) from None
        if bundle is not None and (home is None or not (bundles_root() / bundle).is_dir()):
            raise HTTPException(422, {"message": f"no bundle {bundle}: POST it to {API}/bundles first",
                                      "field": "bundle"})
        for _ in range(3):   # a fresh id on the (rare) collision of two ids drawn in the same second
            try:
                job = store.submit(user, new_job_id(spec.name), spec.model_dump(mode="json"), bundle)
                break
            except UserError:
                continue
        else:
            raise HTTPException(503, "could not draw a free job id; submit again")
        return Submitted(job_id=job.job_id, seq=job.seq, status=job.status)

    def bundles_root() -> Path:
        assert home is not None
        return home / "bundles"

    @router.post("/bundles", status_code=201, response_model=Bundled, responses=_errors(409),
                 openapi_extra={"requestBody": {"required": True, "content": {
                     "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
    async def upload_bundle(request: Request, user: User) -> Bundled:
        """Store a zip of a job's local code and data (as `elastrain submit` packs it: code/ and
        data/); returns its content hash, to pass as `bundle` when submitting the job."""
        if home is None:
            raise HTTPException(409, "this server keeps no files: submit specs that need none")
        body = await request.body()
        try:
            digest = await run_in_threadpool(bundles.unpack, body, bundles_root())
        except UserError as exc:
            raise HTTPException(422, {"message": exc.line(), "field": None}) from None
        return Bundled(bundle=digest, bytes=len(body))

    @router.get("/jobs", response_model=JobList)
    def list_jobs(user: User, status: Annotated[str | None, Query(pattern=STATUS_PATTERN)] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50,
                  offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                  q: Annotated[str | None, Query(max_length=128, description="part of the job's id or name")] = None,
                  sort: Annotated[str, Query(pattern=SORT_PATTERN, description="seq (oldest first), name or "
                                             "status; a leading '-' reverses")] = "seq") -> JobList:
        """Your jobs (an admin: everyone's), oldest submission first unless `sort` says otherwise."""
        state = JobState(status) if status else None
        jobs = store.jobs(user, state, limit, offset, search=q, sort=sort)
        return JobList(jobs=job_views(jobs), total=store.count_jobs(user, state, search=q), limit=limit,
                       offset=offset)

    def job_views(jobs: list[JobInfo]) -> list[JobOut]:
        now = time.time()
        used = jobs_worker_seconds(store, jobs, now)
        latest = recent_decisions(store, limit=1)
        cpu_hour_price = latest[0].cost_per_hour / latest[0].cpus_total if latest and latest[0].cpus_total else 0.0
        return [_job_out(job, used[job.job_id], cpu_hour_price,
                         RunFolder.of(home, job.job_id).read_status()
                         if home and job.status is JobState.RUNNING else None)
                for job in jobs]

    @router.get("/jobs/{job_id}", response_model=JobOut)
    def get_job(job_id: str, user: User) -> JobOut:
        """One job."""
        return job_views([visible_job(job_id, user)])[0]

    @router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobOut, responses=_errors(409))
    def cancel(job_id: str, user: User) -> JobOut:
        """Cancel a job: a queued one at once, a running one at its next step boundary."""
        job = visible_job(job_id, user)
        if job.status.is_final:
            raise HTTPException(409, f"job '{job_id}' already ended ({job.status})")
        if job.status is JobState.QUEUED:
            store.update_job(job_id, status=JobState.CANCELLED, message=f"cancelled by {user.name}")
        else:
            store.update_job(job_id, cancel_requested=True)
        return job_views([store.job(job_id)])[0]

    @router.post("/jobs/{job_id}/scale", status_code=202, response_model=JobOut, responses=_errors(409))
    def scale(job_id: str, body: ScaleRequest, user: User) -> JobOut:
        """Ask for `workers` workers (within the spec's min..max); the scheduler grants what fits."""
        job = visible_job(job_id, user)
        low, high = job.spec["resources"]["workers"]["min"], job.spec["resources"]["workers"]["max"]
        if not low <= body.workers <= high:
            raise HTTPException(422, {"message": f"workers must be within this job's range {low}..{high}",
                                      "field": "workers"})
        if job.status.is_final:
            raise HTTPException(409, f"job '{job_id}' already ended ({job.status})")
        store.update_job(job_id, requested_workers=body.workers)
        return job_views([store.job(job_id)])[0]

    @router.get("/jobs/{job_id}/logs", response_model=LogChunk)
    def logs(job_id: str, user: User, offset: Annotated[int, Query(ge=0)] = 0) -> LogChunk:
        """The job's log from byte `offset` on; pass the returned offset to follow it."""
        visible_job(job_id, user)
        if home is None:
            return LogChunk(text="", offset=offset)
        text, after = RunFolder.of(home, job_id).read_log(offset, LOG_CHUNK_BYTES)
        return LogChunk(text=text, offset=after)

    @router.get("/jobs/{job_id}/status", response_model=JobStatus)
    def job_status(job_id: str, user: User) -> JobStatus:
        """Where the job stands: its driver's status (workers, step, samples/s, step times, ...);
        the state is the store's once the job has ended or while it is queued."""
        job = visible_job(job_id, user)
        status = (RunFolder.of(home, job_id).read_status() if home else None) or JobStatus(job_id, job.status)
        if job.status is not JobState.RUNNING:
            status = replace(status, state=job.status, message=job.message or status.message)
        return status

    @router.get("/jobs/{job_id}/result", response_model=JobResult, responses=_errors(409))
    def job_result(job_id: str, user: User) -> JobResult:
        """The result of a job that ran to its end (409 while it is queued or running, or if it
        ended without one: cancelled while queued, or failed before training)."""
        job = visible_job(job_id, user)
        if not job.result:
            raise HTTPException(409, f"job '{job_id}' has no result ({job.status})")
        return JobResult(**job.result)

    @router.get("/jobs/{job_id}/events")
    def events(job_id: str, user: User, since: float = 0.0) -> list[dict[str, Any]]:
        """The job's events after time `since` (seconds since the epoch)."""
        visible_job(job_id, user)
        return store.events(job_id, since)

    @router.get("/jobs/{job_id}/metrics")
    def metrics(job_id: str, user: User, since: float = 0.0) -> dict[str, list[dict[str, Any]]]:
        """The job's metric series after time `since`."""
        visible_job(job_id, user)
        return store.metrics(job_id, since)

    @router.get("/models", response_model=list[ModelOut])
    def models(user: User) -> list[ModelOut]:
        """Your registered model versions (an admin: everyone's), with their aliases."""
        return [_model_out(m) for m in store.models(user)]

    ModelName = Annotated[str, PathParam(pattern=MODEL_NAME_PATTERN)]

    @router.get("/models/{name}", response_model=list[ModelOut])
    def model_versions(name: ModelName, user: User) -> list[ModelOut]:
        """The versions of your model `name` (an admin: anyone's of that name), with their aliases."""
        versions = store.models(user, name)
        if not versions:
            raise HTTPException(404, f"no model '{name}'")
        return [_model_out(m) for m in versions]

    @router.put("/models/{name}/aliases/{alias}", response_model=ModelOut)
    def set_alias(name: ModelName, alias: str, body: AliasIn, user: User) -> ModelOut:
        """Point the alias (e.g. production) of your model `name` at `version`, moving it from the
        version it named; that version (404: no such version, 422: not an alias name)."""
        try:
            return _model_out(store.set_alias(user, name, alias, body.version))
        except ModelNotFound as exc:
            raise HTTPException(404, exc.line()) from None
        except UserError as exc:
            raise HTTPException(422, {"message": exc.line(), "field": "alias"}) from None

    @router.delete("/models/{name}/aliases/{alias}", response_model=ModelOut)
    def remove_alias(name: ModelName, alias: str, user: User) -> ModelOut:
        """Remove the alias of your model `name`; the version it named (404: no such alias)."""
        try:
            named = store.remove_alias(user, name, check_alias(alias))
        except UserError as exc:
            raise HTTPException(422, {"message": exc.line(), "field": "alias"}) from None
        if named is None:
            raise HTTPException(404, f"model '{name}' has no alias '{alias}'")
        return _model_out(named)

    @router.get("/cluster", response_model=ClusterOut)
    def cluster(user: User, limit: Annotated[int, Query(ge=1, le=2000)] = 300) -> ClusterOut:
        """The cluster's pools, CPUs and cost rate at the scheduler's last decision, and its last
        `limit` decisions."""
        decisions = recent_decisions(store, limit)
        mine = (None if user.is_admin else
                store.visible_job_ids(user, {job for d in decisions for job in d.workers}))
        last = decisions[-1] if decisions else None
        return ClusterOut(
            pools=[PoolOut(name=p.name, spot=p.spot, nodes=p.nodes, cpus=p.cpus_per_node,
                           price_per_hour=p.price_per_hour) for p in (last.pools if last else ())],
            cpus_total=last.cpus_total if last else 0.0, cpus_used=last.cpus_used if last else 0.0,
            cost_per_hour=last.cost_per_hour if last else 0.0,
            decisions=[DecisionOut(t=d.t, workers=_visible_workers(d.workers, mine), nodes=d.nodes,
                                   cpus_used=d.cpus_used, cpus_total=d.cpus_total) for d in decisions])

    def study_visibility(user: UserInfo):
        return None if user.is_admin else (lambda jobs: store.visible_job_ids(user, jobs))

    @router.get("/studies", response_model=list[StudySummary])
    def studies(user: User) -> list[StudySummary]:
        """The hyperparameter studies with a trial among your jobs (an admin: every study)."""
        shown = []
        for study in load_studies(store.engine, study_visibility(user)):
            best = study.best
            shown.append(StudySummary(name=study.name, direction=study.direction, n_trials=len(study.trials),
                                      best_value=best.value if best else None,
                                      best_params=best.params if best else None))
        return shown

    @router.get("/studies/{name}", response_model=StudyOut)
    def study(name: Annotated[str, PathParam(max_length=512)], user: User) -> StudyOut:
        """A study and its trials (404: none of its trials is yours)."""
        found = load_studies(store.engine, study_visibility(user), name)
        if not found:
            raise HTTPException(404, f"no study '{name}'")
        return StudyOut(name=found[0].name, direction=found[0].direction, trials=found[0].trials)

    @router.post("/users", status_code=201, response_model=UserOut, responses=_errors(403, 409))
    def create_user(body: UserIn, _: Admin) -> UserOut:
        """Create a user and return their first token (shown only here)."""
        try:
            user, token = store.create_user(body.name, body.admin)
        except UserError as exc:
            raise HTTPException(409, exc.line()) from None
        return UserOut(name=user.name, admin=user.is_admin, token=token)

    @router.get("/users", response_model=list[UserOut], responses=_errors(403))
    def list_users(_: Admin) -> list[UserOut]:
        """Every user (no tokens)."""
        return [UserOut(name=u.name, admin=u.is_admin) for u in store.users()]

    @router.post("/users/{name}/tokens", status_code=201, response_model=UserOut, responses=_errors(403))
    def issue_token(name: str, _: Admin) -> UserOut:
        """A further token for user `name` (shown only here)."""
        try:
            token = store.issue_token(name)
        except UserError:
            raise HTTPException(404, f"no user '{name}'") from None
        user = store.user(name)
        return UserOut(name=user.name, admin=user.is_admin, token=token)

    @router.get("/users/{name}/tokens", response_model=list[TokenOut], responses=_errors(403))
    def list_tokens(name: str, _: Admin) -> list[TokenOut]:
        """User `name`'s tokens, by prefix."""
        return [TokenOut(**t) for t in store.tokens(name)]

    @router.delete("/tokens/{prefix}", status_code=204)
    def revoke_token(prefix: str, user: User) -> None:
        """Revoke a token by its prefix: your own, or anyone's for an admin."""
        if not store.revoke_token(prefix, None if user.is_admin else user):
            raise HTTPException(404, f"no live token '{prefix}'")

    app.include_router(router)
    app.include_router(federated_router(API, visible_job, User, _errors))
    app.include_router(dashboard_router(store))
    return app


def _parse_spec_body(body: bytes, content_type: str) -> dict:
    """The spec in a JSON body (its depth already checked by `BodyGuard`) or a YAML one."""
    try:
        raw = json.loads(body) if "json" in content_type else read_yaml(body, "request body")[0]
    except ValueError as exc:
        raise HTTPException(422, {"message": f"the body is not valid JSON: {exc}".splitlines()[0],
                                  "field": None}) from None
    except UserError as exc:
        raise HTTPException(422, {"message": exc.line(), "field": None}) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise HTTPException(422, {"message": "the spec must be a mapping of fields", "field": None})
    return raw


def _visible_workers(workers: dict[str, int], visible: set[str] | None) -> dict[str, int]:
    """`workers` with the jobs not in `visible` (None: all are) summed under `(others)`."""
    if visible is None:
        return dict(workers)
    shown = {job: n for job, n in workers.items() if job in visible}
    others = sum(n for job, n in workers.items() if job not in visible)
    return {**shown, "(others)": others} if others else shown


def _model_out(model: ModelInfo) -> ModelOut:
    """`model`, with its optimize report when it is an optimized version in a local folder."""
    report_file = Path(model.url) / REPORT_FILE
    report = json.loads(report_file.read_text()) if "://" not in model.url and report_file.is_file() else None
    return ModelOut(**vars(model), report=report)


def _job_out(job: JobInfo, worker_seconds: float, cpu_hour_price: float, status: JobStatus | None) -> JobOut:
    """`job` as the API shows it: with the worker-seconds it used, its cost at `cpu_hour_price`
    USD per CPU-hour (none when 0), and its progress from the driver's `status` while running."""
    metrics = {k: v for k, v in ((job.result or {}).get("metrics") or {}).items() if isinstance(v, int | float)}
    workers = job.spec["resources"]["workers"]
    progress = eta_s = None
    if job.status is JobState.SUCCEEDED:
        progress = 1.0
    elif status is not None and status.total_steps:
        progress = min(1.0, status.step / status.total_steps)
        if status.samples_per_s and status.batch_size:
            eta_s = (status.total_steps - status.step) * status.batch_size / status.samples_per_s
    cost = worker_seconds / 3600 * job.spec["resources"]["cpus_per_worker"] * cpu_hour_price if cpu_hour_price else None
    return JobOut(job_id=job.job_id, seq=job.seq, owner=job.owner, name=job.name, status=job.status,
                  workers=job.workers, requested_workers=job.requested_workers,
                  cancel_requested=job.cancel_requested, submitted_at=job.submitted_at, started_at=job.started_at,
                  finished_at=job.finished_at, metrics=metrics, message=job.message, spec=job.spec,
                  min_workers=workers["min"], max_workers=workers["max"], progress=progress, eta_s=eta_s,
                  worker_seconds=worker_seconds, cost_usd=cost)
