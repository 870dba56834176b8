"""Connecting to the metadata database and bringing its schema up to date."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, OperationalError

from elastrain import paths
from elastrain.errors import UserError
from elastrain.store.schema import VERSION_TABLE

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
        _move_version_table(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _move_version_table(connection) -> None:
    """Databases made before studies shared them kept elastrain's schema revision in Alembic's
    default `alembic_version` table, which Optuna's storage uses for its own: move it to
    `VERSION_TABLE` and leave `alembic_version` to Optuna."""
    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables or VERSION_TABLE in tables:
        return
    ours = {path.stem.split("_")[0] for path in (MIGRATIONS / "versions").glob("[0-9]*.py")}
    revision = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    if revision not in ours:
        return
    connection.execute(text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"))
    connection.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:revision)"), {"revision": revision})
    connection.execute(text("DROP TABLE alembic_version"))


def _sqlite_pragmas(connection, _record) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the one writer.
    cursor = connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
