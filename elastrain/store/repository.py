"""The store's operations: users and tokens, jobs and their events and metrics, checkpoints,
models and their aliases. Every read that a user makes goes through visibility: a user sees only their own jobs
and models, an admin sees all. Results are plain dataclasses, detached from the session."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, Select, and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from elastrain.errors import UserError
from elastrain.runs import JobState
from elastrain.store.schema import (
    CheckpointRecord,
    Job,
    JobEvent,
    MetricPoint,
    ModelAlias,
    ModelRecord,
    Token,
    User,
)

TOKEN_PREFIX = "et_"
# The states a server's job is recorded in: its driver's others (starting, waiting for resources,
# interrupted) are running here, and the job ends in one of `runs.ENDED`.
JOB_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)
# The orders `Store.jobs` lists jobs in: by submission, name or status ("-": descending).
JOB_SORTS = ("seq", "-seq", "name", "-name", "status", "-status")
MAX_VERSION = 2**31 - 1   # a model version is a 32-bit INTEGER column
ALIAS_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
# Each dialect's INSERT ... ON CONFLICT, so that moving an alias is one atomic statement.
UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


@dataclass(frozen=True)
class UserInfo:
    """Who is acting."""

    id: int
    name: str
    is_admin: bool


@dataclass(frozen=True)
class JobInfo:
    """A job as the store knows it."""

    seq: int
    job_id: str
    owner: str
    name: str
    spec: dict
    status: JobState   # one of JOB_STATES
    workers: int
    requested_workers: int | None
    cancel_requested: bool
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: dict | None
    message: str | None
    bundle: str | None = None   # the sha256 of the code and data submitted with it (elastrain.bundle)


@dataclass(frozen=True)
class ModelInfo:
    """A registered model version."""

    name: str
    version: int
    owner: str
    job_id: str | None
    url: str
    metrics: dict
    spec_hash: str
    data_fingerprint: str
    created_at: datetime
    aliases: tuple[str, ...] = ()
    parent_version: int | None = None   # the version of this model it was derived from (e.g. quantized)
    size_bytes: int | None = None


class ModelNotFound(UserError):
    """No such model, version or alias among its owner's."""


def check_alias(alias: str, where: str = "alias") -> str:
    """`alias` itself if it may name a model version: 1-32 lowercase letters, digits, '-' or '_',
    not only digits (those are versions).

    Raises:
        UserError: it may not.
    """
    if ALIAS_PATTERN.fullmatch(alias) is None or alias.isdigit():
        raise UserError(f"'{alias}' is not an alias name", where=where,
                        fix="use 1-32 lowercase letters, digits, '-' or '_', not only digits (e.g. production)")
    return alias


def hash_token(token: str) -> str:
    """What is stored of a token (tokens are 256-bit random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class Store:
    """Metadata of users, jobs and models in one SQL database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.session = sessionmaker(engine, expire_on_commit=False)

    # users and tokens ---------------------------------------------------------------------

    def create_user(self, name: str, admin: bool = False) -> tuple[UserInfo, str]:
        """A new user and their first API token (returned once; only its hash is kept).

        Raises:
            UserError: the name is taken or not a valid name.
        """
        if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
            raise UserError(f"'{name}' is not a valid user name", where="user name",
                            fix="use 1-64 letters, digits, '-', '_' or '.'")
        taken = UserError(f"user '{name}' already exists", where="user name", fix="choose another name")
        try:
            with self.session.begin() as session:
                if session.scalar(select(User).where(User.name == name)) is not None:
                    raise taken
                user = User(name=name, is_admin=admin, created_at=_now())
                session.add(user)
                session.flush()
                token = self._issue(session, user.id)
                return UserInfo(user.id, user.name, user.is_admin), token
        except IntegrityError:   # another process created the name between the check and the insert
            raise taken from None

    def issue_token(self, name: str) -> str:
        """A further token for user `name`.

        Raises:
            UserError: no such user.
        """
        with self.session.begin() as session:
            user = session.scalar(select(User).where(User.name == name))
            if user is None:
                raise UserError(f"no user '{name}'", where="user name",
                                fix="create it with `elastrain admin create-user`")
            return self._issue(session, user.id)

    def _issue(self, session: Session, user_id: int) -> str:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        session.add(Token(user_id=user_id, token_hash=hash_token(token), prefix=token[:12], created_at=_now()))
        return token

    def tokens(self, name: str) -> list[dict]:
        """User `name`'s tokens as prefixes and dates (the tokens themselves are not stored)."""
        with self.session() as session:
            rows = session.scalars(select(Token).join(User, User.id == Token.user_id).where(User.name == name)
                                   .order_by(Token.id))
            return [{"prefix": t.prefix, "created_at": t.created_at, "revoked": t.revoked_at is not None}
                    for t in rows]

    def revoke_token(self, prefix: str, owner: UserInfo | None = None) -> bool:
        """Revoke the live token starting with `prefix` (only `owner`'s, if given); whether one was."""
        with self.session.begin() as session:
            query = select(Token).where(Token.prefix == prefix, Token.revoked_at.is_(None))
            if owner is not None:
                query = query.where(Token.user_id == owner.id)
            token = session.scalar(query)
            if token is None:
                return False
            token.revoked_at = _now()
            return True

    def authenticate(self, token: str) -> UserInfo | None:
        """The user a live token belongs to, or None."""
        with self.session() as session:
            user = session.scalar(select(User).join(Token, Token.user_id == User.id)
                                  .where(Token.token_hash == hash_token(token), Token.revoked_at.is_(None)))
            return UserInfo(user.id, user.name, user.is_admin) if user else None

    def user(self, name: str) -> UserInfo | None:
        """The user called `name`, if there is one."""
        with self.session() as session:
            user = session.scalar(select(User).where(User.name == name))
            return UserInfo(user.id, user.name, user.is_admin) if user else None

    def users(self) -> list[UserInfo]:
        """Every user, in creation order."""
        with self.session() as session:
            return [UserInfo(u.id, u.name, u.is_admin) for u in session.scalars(select(User).order_by(User.id))]

    # jobs -----------------------------------------------------------------------------------

    def submit(self, owner: UserInfo, job_id: str, spec: dict, bundle: str | None = None) -> JobInfo:
        """Record a queued job (with the hash of the bundle it needs, if any); submissions are
        ordered by the sequence number they get here."""
        with self.session.begin() as session:
            job = Job(job_id=job_id, owner_id=owner.id, name=spec.get("name", "job"), spec=spec, status=JobState.QUEUED,
                      workers=0, cancel_requested=False, bundle=bundle, submitted_at=_now())
            session.add(job)
            try:
                session.flush()
            except IntegrityError:
                raise UserError(f"job id '{job_id}' is taken", where="job_id", fix="submit again") from None
            return self._job_info(job, owner.name)

    def job(self, job_id: str, viewer: UserInfo | None = None) -> JobInfo | None:
        """The job, if it exists and `viewer` may see it (None: no check)."""
        with self.session() as session:
            row = session.execute(self._visible(viewer).where(Job.job_id == job_id)).first()
            return self._job_info(*row) if row else None

    def jobs(self, viewer: UserInfo | None = None, status: JobState | None = None, limit: int = 50, offset: int = 0,
             search: str | None = None, sort: str = "seq") -> list[JobInfo]:
        """Jobs `viewer` may see, optionally of one status and with `search` in their id or name,
        ordered by `sort` (one of `JOB_SORTS`; default: oldest submission first).

        Raises:
            ValueError: `sort` is not one of `JOB_SORTS`.
        """
        if sort not in JOB_SORTS:
            raise ValueError(f"unknown job order {sort}")
        column = {"seq": Job.seq, "name": Job.name, "status": Job.status}[sort.lstrip("-")]
        order = (column.desc(), Job.seq.desc()) if sort.startswith("-") else (column, Job.seq)
        query = self._filtered(self._visible(viewer), status, search).order_by(*order).limit(limit).offset(offset)
        with self.session() as session:
            return [self._job_info(*row) for row in session.execute(query)]

    def count_jobs(self, viewer: UserInfo | None = None, status: JobState | None = None, search: str | None = None
                   ) -> int:
        """How many jobs `viewer` may see (of one status, with `search` in their id or name)."""
        query = select(func.count()).select_from(Job)
        if viewer is not None and not viewer.is_admin:
            query = query.where(Job.owner_id == viewer.id)
        with self.session() as session:
            return int(session.scalar(self._filtered(query, status, search)))

    @staticmethod
    def _filtered(query: Select, status: JobState | None, search: str | None) -> Select:
        if status:
            query = query.where(Job.status == status)
        if search:
            query = query.where(or_(Job.job_id.contains(search, autoescape=True),
                                    Job.name.contains(search, autoescape=True)))
        return query

    def visible_job_ids(self, viewer: UserInfo, job_ids: set[str]) -> set[str]:
        """Those of `job_ids` that are jobs `viewer` may see."""
        if not job_ids:
            return set()
        with self.session() as session:
            return set(session.scalars(self._visible(viewer).with_only_columns(Job.job_id)
                                       .where(Job.job_id.in_(job_ids))))

    def update_job(self, job_id: str, **fields: object) -> None:
        """Set fields of a job (status, workers, requested_workers, cancel_requested, started_at,
        finished_at, result, message)."""
        if "status" in fields and fields["status"] not in JOB_STATES:
            raise ValueError(f"unknown job status {fields['status']}")
        with self.session.begin() as session:
            job = session.scalar(select(Job).where(Job.job_id == job_id))
            for name, value in fields.items():
                setattr(job, name, value)

    def _visible(self, viewer: UserInfo | None):
        query = select(Job, User.name).join(User, User.id == Job.owner_id)
        if viewer is not None and not viewer.is_admin:
            query = query.where(Job.owner_id == viewer.id)
        return query

    @staticmethod
    def _job_info(job: Job, owner: str) -> JobInfo:
        return JobInfo(job.seq, job.job_id, owner, job.name, job.spec, JobState(job.status), job.workers,
                       job.requested_workers, bool(job.cancel_requested), job.submitted_at, job.started_at,
                       job.finished_at, job.result, job.message, job.bundle)

    # events, metrics, checkpoints ----------------------------------------------------------------

    def add_events(self, job_id: str, events: list[dict]) -> None:
        """Append events (dicts as `elastic.events.Event` writes them) to a job."""
        with self.session.begin() as session:
            seq = self._seq(session, job_id)
            session.add_all(JobEvent(job_seq=seq, t=e["t"], kind=e["kind"], step=e["step"], workers=e["workers"],
                                     generation=e["generation"], duration_s=e.get("duration_s"),
                                     detail=e.get("detail", {})) for e in events)

    def events(self, job_id: str, since: float = 0.0) -> list[dict]:
        """A job's events after time `since`, oldest first."""
        with self.session() as session:
            seq = self._seq(session, job_id)
            rows = session.scalars(select(JobEvent).where(JobEvent.job_seq == seq, JobEvent.t > since)
                                   .order_by(JobEvent.t, JobEvent.id))
            return [{"t": r.t, "kind": r.kind, "step": r.step, "workers": r.workers, "generation": r.generation,
                     "duration_s": r.duration_s, "detail": r.detail} for r in rows]

    def add_metrics(self, job_id: str, points: list[dict]) -> None:
        """Append metric points ({name, step, epoch, value, t}) to a job's series."""
        with self.session.begin() as session:
            seq = self._seq(session, job_id)
            session.add_all(MetricPoint(job_seq=seq, name=p["name"], step=p["step"], epoch=p.get("epoch"),
                                        value=p["value"], t=p["t"]) for p in points)

    def metrics(self, job_id: str, since: float = 0.0) -> dict[str, list[dict]]:
        """A job's metric series after time `since`: name -> [{step, epoch, value, t}]."""
        with self.session() as session:
            seq = self._seq(session, job_id)
            series: dict[str, list[dict]] = {}
            for r in session.scalars(select(MetricPoint).where(MetricPoint.job_seq == seq, MetricPoint.t > since)
                                     .order_by(MetricPoint.t, MetricPoint.id)):
                series.setdefault(r.name, []).append({"step": r.step, "epoch": r.epoch, "value": r.value, "t": r.t})
            return series

    def add_checkpoint(self, job_id: str, step: int, url: str, sha256: str, size: int) -> None:
        """Record a durable checkpoint of a job."""
        with self.session.begin() as session:
            session.add(CheckpointRecord(job_seq=self._seq(session, job_id), step=step, url=url, sha256=sha256,
                                         bytes=size, created_at=_now()))

    def checkpoints(self, job_id: str) -> list[dict]:
        """A job's recorded checkpoints, oldest first."""
        with self.session() as session:
            seq = self._seq(session, job_id)
            rows = session.scalars(select(CheckpointRecord).where(CheckpointRecord.job_seq == seq)
                                   .order_by(CheckpointRecord.step, CheckpointRecord.id))
            return [{"step": r.step, "url": r.url, "sha256": r.sha256, "bytes": r.bytes} for r in rows]

    @staticmethod
    def _seq(session: Session, job_id: str) -> int:
        seq = session.scalar(select(Job.seq).where(Job.job_id == job_id))
        if seq is None:
            raise KeyError(job_id)
        return seq

    # models -----------------------------------------------------------------------------------------

    def register_model(self, owner: UserInfo, name: str, url: str, metrics: dict, spec_hash: str,
                       data_fingerprint: str, job_id: str | None = None, parent_version: int | None = None,
                       size_bytes: int | None = None) -> ModelInfo:
        """Add the next version of `owner`'s model `name`, derived from its version `parent_version`
        when given (a quantized or pruned copy, say), `size_bytes` large.

        Raises:
            ModelNotFound: `parent_version` is not a version of that model.
        """
        with self.session.begin() as session:
            if parent_version is not None and self._record(session, owner.id, name, parent_version) is None:
                raise ModelNotFound(f"model '{name}' has no version {parent_version} to derive from",
                                    where="parent_version", fix="name a registered version of the same model")
            latest = session.scalar(select(func.max(ModelRecord.version))
                                    .where(ModelRecord.owner_id == owner.id, ModelRecord.name == name))
            record = ModelRecord(name=name, version=(latest or 0) + 1, owner_id=owner.id,
                                 job_seq=self._seq(session, job_id) if job_id else None, url=url, metrics=metrics,
                                 spec_hash=spec_hash, data_fingerprint=data_fingerprint, created_at=_now(),
                                 parent_version=parent_version, size_bytes=size_bytes)
            session.add(record)
            session.flush()
            return self._model_info(record, owner.name, job_id, ())

    def models(self, viewer: UserInfo | None = None, name: str | None = None) -> list[ModelInfo]:
        """Model versions `viewer` may see (only those called `name`, if given), by name then
        version, each with its aliases."""
        query = self._model_query().order_by(ModelRecord.name, User.name, ModelRecord.version)
        if viewer is not None and not viewer.is_admin:
            query = query.where(ModelRecord.owner_id == viewer.id)
        if name is not None:
            query = query.where(ModelRecord.name == name)
        with self.session() as session:
            return self._model_infos(session, query)

    def model(self, owner: UserInfo, name: str, version: int | None = None, alias: str | None = None
              ) -> ModelInfo | None:
        """`owner`'s model `name` at `version`, or at the version `alias` names, or else its latest
        version; None if there is no such version (model names are per owner, an admin's too)."""
        if version is not None and alias is not None:
            raise ValueError("give a version or an alias, not both")
        query = (self._model_query().where(ModelRecord.owner_id == owner.id, ModelRecord.name == name)
                 .order_by(ModelRecord.version.desc()).limit(1))
        if version is not None:
            query = query.where(ModelRecord.version == version)
        if alias is not None:
            query = query.join(ModelAlias, and_(ModelAlias.owner_id == ModelRecord.owner_id,
                                                ModelAlias.name == ModelRecord.name,
                                                ModelAlias.version == ModelRecord.version)
                               ).where(ModelAlias.alias == alias)
        with self.session() as session:
            found = self._model_infos(session, query)
        return found[0] if found else None

    def set_alias(self, owner: UserInfo, name: str, alias: str, version: int) -> ModelInfo:
        """Point `owner`'s `alias` of model `name` at `version`, moving it from the version it named
        before; that version, with its aliases.

        Raises:
            UserError: `alias` is not an alias name (see :func:`check_alias`).
            ModelNotFound: the model has no such version.
        """
        check_alias(alias)
        with self.session.begin() as session:
            if self._record(session, owner.id, name, version) is None:
                raise ModelNotFound(f"model '{name}' has no version {version}", where=f"{name}:{version}",
                                    fix="see `elastrain models` for the registered versions")
            upsert = UPSERTS[self.engine.dialect.name](ModelAlias).values(
                owner_id=owner.id, name=name, alias=alias, version=version)
            session.execute(upsert.on_conflict_do_update(index_elements=["owner_id", "name", "alias"],
                                                         set_={"version": version}))
        return self.model(owner, name, version)

    def remove_alias(self, owner: UserInfo, name: str, alias: str) -> ModelInfo | None:
        """Remove `owner`'s `alias` of model `name`; the version it named (None if there was no
        such alias)."""
        with self.session.begin() as session:
            version = session.scalar(delete(ModelAlias).where(
                ModelAlias.owner_id == owner.id, ModelAlias.name == name, ModelAlias.alias == alias
            ).returning(ModelAlias.version))
        return None if version is None else self.model(owner, name, version)

    @staticmethod
    def _record(session: Session, owner_id: int, name: str, version: int) -> ModelRecord | None:
        return session.scalar(select(ModelRecord).where(ModelRecord.owner_id == owner_id, ModelRecord.name == name,
                                                        ModelRecord.version == version))

    @staticmethod
    def _model_query() -> Select:
        return (select(ModelRecord, User.name, Job.job_id).join(User, User.id == ModelRecord.owner_id)
                .outerjoin(Job, Job.seq == ModelRecord.job_seq))

    def _model_infos(self, session: Session, query: Select) -> list[ModelInfo]:
        """The model versions `query` (of `_model_query`) selects, with their aliases."""
        rows = session.execute(query).all()
        if not rows:
            return []
        aliases: dict[tuple[int, str, int], list[str]] = {}
        for entry in session.scalars(select(ModelAlias).where(
                ModelAlias.owner_id.in_({m.owner_id for m, _, _ in rows}),
                ModelAlias.name.in_({m.name for m, _, _ in rows})).order_by(ModelAlias.alias)):
            aliases.setdefault((entry.owner_id, entry.name, entry.version), []).append(entry.alias)
        return [self._model_info(m, owner, job_id, tuple(aliases.get((m.owner_id, m.name, m.version), ())))
                for m, owner, job_id in rows]

    @staticmethod
    def _model_info(record: ModelRecord, owner: str, job_id: str | None, aliases: tuple[str, ...]) -> ModelInfo:
        return ModelInfo(record.name, record.version, owner, job_id, record.url, record.metrics, record.spec_hash,
                         record.data_fingerprint, record.created_at, aliases, record.parent_version,
                         record.size_bytes)
