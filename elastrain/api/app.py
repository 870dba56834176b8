"""The REST control plane under /api/v1: jobs, their events, metrics and logs, models and their
aliases, users.

Every route but the OpenAPI document needs `Authorization: Bearer TOKEN`. A user sees and acts
on their own jobs and models only (anything else is 404, as if it did not exist); an admin sees
all and manages users.
"""
# No `from __future__ import annotations` here: FastAPI must see the real dependency types of
# the routes defined inside create_app.


import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.base import BaseHTTPMiddleware

from elastrain import bundle as bundles
from elastrain.elastic import JobResult, JobStatus, RunFolder, new_job_id
from elastrain.errors import UserError
from elastrain.spec import validate_spec
from elastrain.spec.limits import check_json_depth
from elastrain.spec.load import read_yaml
from elastrain.store import JobInfo, ModelInfo, Store, UserInfo
from elastrain.store.repository import MAX_VERSION, ModelNotFound, check_alias

API = "/api/v1"
MAX_BODY_BYTES = 1_000_000
LOG_CHUNK_BYTES = 256_000
STATUS_PATTERN = "^(queued|running|succeeded|failed|cancelled)$"
MODEL_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,128}$"   # a job's name, which its model is registered under


class JobOut(BaseModel):
    """A job as the API shows it."""

    job_id: str
    seq: int
    owner: str
    name: str
    status: str
    workers: int
    requested_workers: int | None = None
    cancel_requested: bool = False
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str | None = None
    spec: dict[str, Any]


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
    status: str


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


class AliasIn(BaseModel):
    """The version an alias is to name."""

    version: int = Field(ge=1, le=MAX_VERSION)


class Bundled(BaseModel):
    """An uploaded bundle of a job's local code and data, by content hash."""

    bundle: str
    bytes: int


class BodyGuard(BaseHTTPMiddleware):
    """Refuses, before any route parses it, a request body over `limit` bytes (413; a bundle upload
    may have up to `bundles.MAX_BUNDLE_BYTES`) and a JSON body nested deeper than `MAX_DEPTH` (422:
    json.loads would recurse once per level)."""

    def __init__(self, app, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def dispatch(self, request: Request, call_next):
        limit = bundles.MAX_BUNDLE_BYTES if request.url.path == f"{API}/bundles" else self.limit
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
    app = FastAPI(title="elastrain", version="1", openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs",
                  redoc_url=None)
    app.add_middleware(BodyGuard, limit=max_body)
    router = APIRouter(prefix=API)

    def current_user(authorization: Annotated[str | None, Header()] = None) -> UserInfo:
        scheme, _, token = (authorization or "").partition(" ")
        user = store.authenticate(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
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

    @router.post("/jobs", status_code=201, response_model=Submitted,
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

    @router.post("/bundles", status_code=201, response_model=Bundled,
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
                  offset: Annotated[int, Query(ge=0)] = 0) -> JobList:
        """Your jobs (an admin: everyone's), oldest submission first."""
        jobs = store.jobs(user, status, limit, offset)
        return JobList(jobs=[_job_out(j) for j in jobs], total=store.count_jobs(user, status), limit=limit,
                       offset=offset)

    @router.get("/jobs/{job_id}", response_model=JobOut)
    def get_job(job_id: str, user: User) -> JobOut:
        """One job."""
        return _job_out(visible_job(job_id, user))

    @router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobOut)
    def cancel(job_id: str, user: User) -> JobOut:
        """Cancel a job: a queued one at once, a running one at its next step boundary."""
        job = visible_job(job_id, user)
        if job.status not in ("queued", "running"):
            raise HTTPException(409, f"job '{job_id}' already ended ({job.status})")
        if job.status == "queued":
            store.update_job(job_id, status="cancelled", message=f"cancelled by {user.name}")
        else:
            store.update_job(job_id, cancel_requested=True)
        return _job_out(store.job(job_id))

    @router.post("/jobs/{job_id}/scale", status_code=202, response_model=JobOut)
    def scale(job_id: str, body: ScaleRequest, user: User) -> JobOut:
        """Ask for `workers` workers (within the spec's min..max); the scheduler grants what fits."""
        job = visible_job(job_id, user)
        low, high = job.spec["resources"]["workers"]["min"], job.spec["resources"]["workers"]["max"]
        if not low <= body.workers <= high:
            raise HTTPException(422, {"message": f"workers must be within this job's range {low}..{high}",
                                      "field": "workers"})
        if job.status not in ("queued", "running"):
            raise HTTPException(409, f"job '{job_id}' already ended ({job.status})")
        store.update_job(job_id, requested_workers=body.workers)
        return _job_out(store.job(job_id))

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
        if job.status != "running":
            status = replace(status, state=job.status, message=job.message or status.message)
        return status

    @router.get("/jobs/{job_id}/result", response_model=JobResult)
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

    @router.post("/users", status_code=201, response_model=UserOut)
    def create_user(body: UserIn, _: Admin) -> UserOut:
        """Create a user and return their first token (shown only here)."""
        try:
            user, token = store.create_user(body.name, body.admin)
        except UserError as exc:
            raise HTTPException(409, exc.line()) from None
        return UserOut(name=user.name, admin=user.is_admin, token=token)

    @router.get("/users", response_model=list[UserOut])
    def list_users(_: Admin) -> list[UserOut]:
        """Every user (no tokens)."""
        return [UserOut(name=u.name, admin=u.is_admin) for u in store.users()]

    @router.post("/users/{name}/tokens", status_code=201, response_model=UserOut)
    def issue_token(name: str, _: Admin) -> UserOut:
        """A further token for user `name` (shown only here)."""
        try:
            token = store.issue_token(name)
        except UserError:
            raise HTTPException(404, f"no user '{name}'") from None
        user = store.user(name)
        return UserOut(name=user.name, admin=user.is_admin, token=token)

    @router.get("/users/{name}/tokens", response_model=list[TokenOut])
    def list_tokens(name: str, _: Admin) -> list[TokenOut]:
        """User `name`'s tokens, by prefix."""
        return [TokenOut(**t) for t in store.tokens(name)]

    @router.delete("/tokens/{prefix}", status_code=204)
    def revoke_token(prefix: str, user: User) -> None:
        """Revoke a token by its prefix: your own, or anyone's for an admin."""
        if not store.revoke_token(prefix, None if user.is_admin else user):
            raise HTTPException(404, f"no live token '{prefix}'")

    app.include_router(router)
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


def _model_out(model: ModelInfo) -> ModelOut:
    return ModelOut(**vars(model))


def _job_out(job: JobInfo) -> JobOut:
    metrics = {k: v for k, v in ((job.result or {}).get("metrics") or {}).items() if isinstance(v, int | float)}
    return JobOut(job_id=job.job_id, seq=job.seq, owner=job.owner, name=job.name, status=job.status,
                  workers=job.workers, requested_workers=job.requested_workers,
                  cancel_requested=job.cancel_requested, submitted_at=job.submitted_at, started_at=job.started_at,
                  finished_at=job.finished_at, metrics=metrics, message=job.message, spec=job.spec)


