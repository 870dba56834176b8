"""Models remember the version they were derived from and their size; aliases name versions.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("models") as models:
        models.add_column(sa.Column("parent_version", sa.Integer, nullable=True))
        models.add_column(sa.Column("size_bytes", sa.BigInteger, nullable=True))
    op.create_table(
        "model_aliases",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("owner_id", Id, sa.ForeignKey("users.id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("alias", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.UniqueConstraint("owner_id", "name", "alias", name="uq_model_aliases_owner_name_alias"),
        sa.ForeignKeyConstraint(["owner_id", "name", "version"], ["models.owner_id", "models.name", "models.version"],
                                name="fk_model_aliases_version"),
    )


def downgrade() -> None:
    op.drop_table("model_aliases")
    with op.batch_alter_table("models") as models:
        models.drop_column("size_bytes")
        models.drop_column("parent_version")
