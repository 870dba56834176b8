"""Connecting to the metadata database and bringing its schema up to date."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.exc import ArgumentError, OperationalError

from elastrain import paths
from elastrain.errors import UserError
from elastrain.store.schema import VERSION_TABLE

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# PostgreSQL advisory lock key under which one process at a time migrates (any fixed 64-bit number).
MIGRATION_LOCK_KEY = 0x656C617374726E


def database_url() -> str:
    """`ELASTRAIN_DB_URL`, or a SQLite file under `ELASTRAIN_HOME`.

    Raises:
        UserError: ELASTRAIN_HOME is needed and cannot be written.
    """
    configured = os.environ.get("ELASTRAIN_DB_URL")
    if configured:
        return configured
    return f"sqlite:///{paths.writable_home() / 'elastrain.db'}"


def connect(url: str | None = None, migrate: bool = True) -> Engine:
    """An engine for `url` (default :func:`database_url`) whose schema is at the newest revision.
    Processes that connect to a new database at once create its schema one after the other.

    Raises:
        UserError: the URL is malformed, the database server cannot be reached, or a SQLite
            file or its folder cannot be written.
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
            with _sqlite_migration_lock(engine):
                upgrade(engine)
        except OperationalError as exc:
            engine.dispose()   # its connections hold the file open (a full disk could not be unmounted)
            raise _unusable(engine, exc) from None
        except UserError:
            engine.dispose()
            raise
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to `revision` (data already stored is kept). On PostgreSQL one
    process at a time does (an advisory lock held to the end of the transaction); SQLite callers
    hold :func:`_sqlite_migration_lock`. Whoever comes second finds the schema made: nothing to do."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        _move_version_table(connection)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@contextlib.contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    """Hold an exclusive lock on a file beside a SQLite database (`NAME.lock`) while inside, so
    that concurrent first uses do not both create its tables; a no-op for other databases and
    in-memory SQLite.

    Raises:
        UserError: the lock file cannot be made (the folder is read-only or full).
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    lock = Path(f"{database}.lock")
    try:
        handle = lock.open("a")
    except OSError as exc:
        raise _folder_not_writable(Path(database), exc) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)   # released when the file is closed
        yield


def _unusable(engine: Engine, exc: OperationalError) -> UserError:
    """The one line for a database that refused the connection or the schema's migration."""
    reason = str(exc.orig).strip().splitlines()[0]
    where = engine.url.render_as_string(hide_password=True)
    if engine.dialect.name != "sqlite":
        return UserError(f"cannot reach the database: {reason}", where=where,
                         fix="start the database server or correct ELASTRAIN_DB_URL")
    database = Path(engine.url.database or "")
    if not os.access(database.parent, os.W_OK) or (database.exists() and not os.access(database, os.W_OK)):
        return _folder_not_writable(database, OSError(f"SQLite: {reason}"))
    if "full" in reason:
        return _folder_not_writable(database, OSError(28, f"SQLite: {reason}"))
    return UserError(f"cannot use the SQLite database {database}: {reason}", where=where,
                     fix="check that the file is a SQLite database elastrain made, or set ELASTRAIN_DB_URL "
                         "(or ELASTRAIN_HOME) elsewhere")


def _folder_not_writable(database: Path, exc: OSError) -> UserError:
    """The one line for a SQLite `database` whose folder refused a write: it names ELASTRAIN_HOME
    when the database is its own, else the folder of the ELASTRAIN_DB_URL file."""
    if not os.environ.get("ELASTRAIN_DB_URL"):
        return paths.not_writable(paths.home(), exc)
    reason = exc.strerror or str(exc)
    return UserError(f"the folder of the SQLite database {database} is not writable ({reason})",
                     where="ELASTRAIN_DB_URL", fix="give a sqlite:///PATH in a folder you can write")


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
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the one writer. The
    # busy timeout comes first: switching to WAL waits for other processes' locks too.
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
