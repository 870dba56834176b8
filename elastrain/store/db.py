"""Connecting to the metadata database and bringing its schema up to date."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, OperationalError

from elastrain import paths
from elastrain.errors import UserError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def database_url() -> str:
    """`ELASTRAIN_DB_URL`, or a SQLite file under `ELASTRAIN_HOME`."""
    configured = os.environ.get("ELASTRAIN_DB_URL")
    if configured:
        return configured
    home = paths.home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'elastrain.db'}"


def connect(url: str | None = None, migrate: bool = True) -> Engine:
    """An engine for `url` (default :func:`database_url`) whose schema is at the newest revision.

    Raises:
        UserError: the URL is malformed or the database cannot be reached.
    """
    url = url or database_url()
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, ModuleNotFoundError) as exc:
        raise UserError(f"cannot use database URL '{url}': {exc}", where="ELASTRAIN_DB_URL",
                        fix="use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        try:
            upgrade(engine)
        except OperationalError as exc:
            raise UserError(f"cannot reach the database: {str(exc.orig).strip().splitlines()[0]}",
                            where=engine.url.render_as_string(hide_password=True),
                            fix="start the database server or correct ELASTRAIN_DB_URL") from None
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision` (data already stored is kept)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _sqlite_pragmas(connection, _record) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the one writer.
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
