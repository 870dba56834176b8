"""Alembic's entry point: runs migrations on the connection `elastrain.store.db.migrate` hands over."""

from alembic import context

from elastrain.store.schema import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
