"""The dashboard's login sessions, and the scheduler's decisions with the cluster they were made on.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("session_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("token_id", Id, sa.ForeignKey("tokens.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "scheduler_decisions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("t", sa.Float, nullable=False, index=True),
        sa.Column("workers", sa.JSON, nullable=False),
        sa.Column("nodes", sa.JSON, nullable=False),
        sa.Column("pools", sa.JSON, nullable=False),
        sa.Column("cpus_total", sa.Float, nullable=False),
        sa.Column("cpus_used", sa.Float, nullable=False),
        sa.Column("cost_per_hour", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("scheduler_decisions")
    op.drop_table("web_sessions")
