"""The routes a federated job's clients call, under /api/v1/jobs/{job_id}/federated.

A client authenticates as any API caller (a token of the job's owner, or of an admin): another
user's token finds no such job (404). Its requests reach the job's driver, whose
`federated.coordinator.RoundCoordinator` holds the rounds; a request that does not fit the round
(a round that ended, a client not asked) is a 409 saying why. Weights and updates travel as raw
little-endian float64 (`application/octet-stream`); nothing a client sends holds a row of its data.
"""
# No `from __future__ import annotations`: FastAPI must see the real dependency types.

from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from elastrain.federated.coordinator import FLOAT64, HEARTBEAT_S, POLL_S
from elastrain.runs import JobState
from elastrain.store import JobInfo

# An update of a model of up to 64M parameters (float64).
MAX_UPDATE_BYTES = 512 * 2**20
_OCTETS = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


class Joined(BaseModel):
    """A client's place in a federated job, and what it needs before its first round."""

    client_id: int
    heartbeat_s: float = Field(description="send a heartbeat at least this often while training")
    setup: dict[str, Any] = Field(description="the job's spec, its preprocessing (fields of "
                                              "elastrain.data.preprocess.Preprocessor), task and classes")


class TaskOut(BaseModel):
    """A round the client is asked to train."""

    round: int
    seed: int = Field(description="the seed of its local training this round")
    parameters: int = Field(description="values in the global weights (float64)")
    threshold: int = Field(0, description="under secure aggregation, the shares needed to unmask (else 0)")


class Accepted(BaseModel):
    """An update the round took."""

    round: int


def _driver_call(job: JobInfo, call: str, *args: Any) -> Any:
    """`call` on the job's driver (see `JobDriver.federated`), as a 409 where it does not fit."""
    import ray

    from elastrain.elastic import find_driver
    from elastrain.federated.coordinator import Refused

    if job.status in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        raise HTTPException(409, f"job {job.job_id} has ended ({job.status}): no more rounds")
    if job.status is not JobState.RUNNING:
        raise HTTPException(409, f"job {job.job_id} is {job.status}: clients take part once it runs")
    driver = find_driver(job.job_id) if ray.is_initialized() else None
    if driver is None:
        raise HTTPException(409, f"job {job.job_id} has no running driver on this server; try again")
    try:
        return ray.get(driver.federated.remote(call, *args))
    except Refused as exc:
        raise HTTPException(409, _said(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, {"message": _said(exc), "field": None}) from None
    except ray.exceptions.RayActorError:
        raise HTTPException(409, f"job {job.job_id}'s driver has ended; try again") from None


def _said(exc: Exception) -> str:
    """The line an error raised in the driver says (Ray's wrapper would add the driver's traceback)."""
    return str(getattr(exc, "cause", None) or exc)


def federated_router(prefix: str, visible_job: Callable[..., JobInfo], user_type: Any,
                     errors: Callable[..., dict]) -> APIRouter:
    """The federated clients' routes, under `prefix` (the API's), for the jobs `visible_job`
    (job_id, user) lets a user of type `user_type` see; `errors` documents their error answers."""
    router = APIRouter(prefix=prefix)
    Client = Annotated[int, Query(ge=0, le=2**31, description="the id /federated/clients gave")]
    Round = Annotated[int, PathParam(ge=1, le=2**31, description="the round, from 1")]

    async def call(job_id: str, user: Any, name: str, *args: Any) -> Any:
        job = visible_job(job_id, user)
        return await run_in_threadpool(_driver_call, job, name, *args)

    @router.post("/jobs/{job_id}/federated/clients", status_code=201, response_model=Joined,
                 responses=errors(409))
    async def join(job_id: str, user: user_type) -> Joined:
        """Join a running federated job as a new client (it is asked from the next round on)."""
        client, setup = await call(job_id, user, "join")
        return Joined(client_id=client, heartbeat_s=HEARTBEAT_S, setup=setup)

    @router.get("/jobs/{job_id}/federated/task", response_model=TaskOut, responses={204: {
        "description": "No round for this client yet: ask again"}, **errors(409)})
    async def task(job_id: str, user: user_type, client_id: Client,
                   wait_s: Annotated[float, Query(ge=0, le=POLL_S)] = POLL_S) -> Any:
        """The round this client is asked to train, waiting up to `wait_s` for one."""
        given = await call(job_id, user, "task", client_id, wait_s)
        if given is None:
            return Response(status_code=204)
        return TaskOut(round=given.round, seed=given.seed, parameters=given.parameters, threshold=given.threshold)

    @router.get("/jobs/{job_id}/federated/rounds/{number}/weights", responses={200: {"content": _OCTETS},
                                                                               **errors(409)},
                response_class=Response)
    async def weights(job_id: str, number: Round, user: user_type, client_id: Client) -> Response:
        """The global weights round `number` trains (float64, little-endian)."""
        values = await call(job_id, user, "round_weights", client_id, number)
        return Response(np.asarray(values, FLOAT64).tobytes(), media_type="application/octet-stream")

    @router.put("/jobs/{job_id}/federated/rounds/{number}/update", status_code=202, response_model=Accepted,
                responses=errors(409), openapi_extra={"requestBody": {"required": True, "content": _OCTETS}})
    async def update(job_id: str, number: Round, request: Request, user: user_type, client_id: Client,
                     examples: Annotated[int, Query(ge=1, le=2**62, description="rows it trained on")]) -> Accepted:
        """This client's update of round `number`: its trained weights minus the round's (float64,
        little-endian), and the rows it trained on; under secure aggregation its masked input
        (uint64, little-endian, `federated.secagg`)."""
        await call(job_id, user, "report", client_id, number, await request.body(), examples)
        return Accepted(round=number)

    @router.post("/jobs/{job_id}/federated/rounds/{number}/secagg/{step}", status_code=202, response_model=Accepted,
                 responses=errors(409))
    async def secagg_post(job_id: str, number: Round, step: Annotated[str, PathParam(pattern="^(keys|shares|reveal)$")],
                          message: dict[str, Any], user: user_type, client_id: Client) -> Accepted:
        """This client's message of a secure round's protocol (`federated.secagg`): `keys` its public
        keys, `shares` its encrypted shares for its peers, `reveal` its shares for unmasking."""
        await call(job_id, user, "secagg_post", client_id, number, step, message)
        return Accepted(round=number)

    @router.get("/jobs/{job_id}/federated/rounds/{number}/secagg/{step}", responses={
        204: {"description": "The step before has not closed yet: ask again"}, **errors(409)})
    async def secagg_get(job_id: str, number: Round, step: Annotated[str, PathParam(pattern="^(roster|inbox|unmask)$")],
                         user: user_type, client_id: Client,
                         wait_s: Annotated[float, Query(ge=0, le=POLL_S)] = POLL_S) -> Any:
        """What this client needs for its next step of a secure round: `roster` (every client's
        keys), `inbox` (the shares sent to it, and who sent theirs), `unmask` (who dropped, who
        survived), waiting up to `wait_s` for it."""
        given = await call(job_id, user, "secagg_get", client_id, number, step, wait_s)
        return Response(status_code=204) if given is None else given

    @router.post("/jobs/{job_id}/federated/heartbeat", status_code=204, response_class=Response,
                 responses=errors(409))
    async def heartbeat(job_id: str, user: user_type, client_id: Client) -> Response:
        """This client is alive (it trains)."""
        await call(job_id, user, "heartbeat", client_id)
        return Response(status_code=204)

    return router
