"""The first schema: users, tokens, jobs, events, metrics, checkpoints, models.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("user_id", Id, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(12), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("revoked_at", When, nullable=True),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", Id, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(128), nullable=False, unique=True),
        sa.Column("owner_id", Id, sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("submitted_at", When, nullable=False),
        sa.Column("started_at", When, nullable=True),
        sa.Column("finished_at", When, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
    )
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job_seq", Id, sa.ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
        sa.Column("t", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("workers", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_job_t", "events", ["job_seq", "t"])
    op.create_table(
        "metrics",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job_seq", Id, sa.ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("t", sa.Float, nullable=False),
    )
    op.create_index("ix_metrics_job_t", "metrics", ["job_seq", "t"])
    op.create_table(
        "checkpoints",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("job_seq", Id, sa.ForeignKey("jobs.seq", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", When, nullable=False),
    )
    op.create_table(
        "models",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("owner_id", Id, sa.ForeignKey("users.id"), nullable=False, index=True),
        sa.Column("job_seq", Id, sa.ForeignKey("jobs.seq", ondelete="SET NULL"), nullable=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("spec_hash", sa.String(64), nullable=False),
        sa.Column("data_fingerprint", sa.String(64), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.UniqueConstraint("owner_id", "name", "version", name="uq_models_owner_name_version"),
    )


def downgrade() -> None:
    for table in ("models", "checkpoints", "metrics", "events", "jobs", "tokens", "users"):
        op.drop_table(table)
