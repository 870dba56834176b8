"""The metadata schema: users and their hashed tokens, jobs, events, metric series,
checkpoints, models and their aliases. Alembic migrations (`store/migrations`) create and upgrade it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import false

# Where Alembic keeps the revision of elastrain's schema: not its default `alembic_version`, which
# Optuna's storage (studies share the database) keeps its own in.
VERSION_TABLE = "elastrain_schema_version"
# SQLite autoincrements only an INTEGER primary key; PostgreSQL gets a BIGINT.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """All elastrain tables."""


class User(Base):
    """A person or service that owns jobs and models."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Token(Base):
    """An API token; only its SHA-256 is stored."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))   # shown in listings so a person can tell tokens apart
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """A submitted training job. `seq` orders submissions (first come, first served)."""

    __tablename__ = "jobs"
    seq: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(128), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)   # a JobState of repository.JOB_STATES
    workers: Mapped[int] = mapped_column(Integer, default=0)      # current allocation
    requested_workers: Mapped[int | None] = mapped_column(Integer)   # a user's resize request
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    bundle: Mapped[str | None] = mapped_column(String(64))   # sha256 of its code and data (elastrain.bundle)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result: Mapped[dict | None] = mapped_column(JSON)
    message: Mapped[str | None] = mapped_column(Text)


class JobEvent(Base):
    """A membership change, recovery, checkpoint or state change of a job, with its duration."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_seq: Mapped[int] = mapped_column(ForeignKey("jobs.seq", ondelete="CASCADE"))
    t: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer)
    workers: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict] = mapped_column(JSON)
    __table_args__ = (Index("ix_events_job_t", "job_seq", "t"),)


class MetricPoint(Base):
    """One value of one metric series of a job."""

    __tablename__ = "metrics"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_seq: Mapped[int] = mapped_column(ForeignKey("jobs.seq", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int | None] = mapped_column(Integer)
    value: Mapped[float] = mapped_column(Float)
    t: Mapped[float] = mapped_column(Float)
    __table_args__ = (Index("ix_metrics_job_t", "job_seq", "t"),)


class CheckpointRecord(Base):
    """A durable checkpoint a job wrote."""

    __tablename__ = "checkpoints"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_seq: Mapped[int] = mapped_column(ForeignKey("jobs.seq", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    url: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ModelRecord(Base):
    """A registered model version and where it came from."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    job_seq: Mapped[int | None] = mapped_column(ForeignKey("jobs.seq", ondelete="SET NULL"))
    url: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    parent_version: Mapped[int | None] = mapped_column(Integer)   # the version of this model it was derived from
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (UniqueConstraint("owner_id", "name", "version", name="uq_models_owner_name_version"),)


class ModelAlias(Base):
    """A name (`production`, `staging`, ...) for one version of an owner's model; moving it
    replaces the version it names."""

    __tablename__ = "model_aliases"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(128))
    alias: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    __table_args__ = (
        UniqueConstraint("owner_id", "name", "alias", name="uq_model_aliases_owner_name_alias"),
        ForeignKeyConstraint(["owner_id", "name", "version"], ["models.owner_id", "models.name", "models.version"],
                             name="fk_model_aliases_version"),
    )


class WebSession(Base):
    """A dashboard login: only the SHA-256 of its cookie is stored. It lives no longer than the
    token it was opened with (revoking the token ends it) and no longer than `expires_at`."""

    __tablename__ = "web_sessions"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SchedulerDecision(Base):
    """An allocation the server's scheduler made, and the cluster it made it on (`decisions.Decision`)."""

    __tablename__ = "scheduler_decisions"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    t: Mapped[float] = mapped_column(Float, index=True)
    workers: Mapped[dict] = mapped_column(JSON)   # job id -> workers
    nodes: Mapped[dict] = mapped_column(JSON)     # pool -> nodes requested ({}: keep what is held)
    pools: Mapped[list] = mapped_column(JSON)     # PoolState dicts
    cpus_total: Mapped[float] = mapped_column(Float)
    cpus_used: Mapped[float] = mapped_column(Float)
    cost_per_hour: Mapped[float] = mapped_column(Float)
