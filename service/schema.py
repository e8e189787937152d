"""The job database's schema: `migrate` (what `lipsync migrate` runs, the one place that changes
it) and `check_schema` / `wait_for_schema` (what the API and workers do at start).

Migrations run under a lock so that any number of processes may start at once: PostgreSQL's
advisory lock, taken in the migration's own transaction (DDL is transactional there, so a crash
leaves the schema as it was); SQLite: an exclusive lock on a file beside the database. The second
process in finds the schema at head and does nothing."""
from __future__ import annotations

import contextlib
import fcntl
import time
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from lipsync_triton import log
from lipsync_triton.errors import LipsyncError

MIGRATE_LOCK_KEY = "lipsync-migrate"
SCHEMA_WAIT_LOG_S = 10.0


def _config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config("sqlite://")).get_current_head()


def current_revision(url: str, connection=None) -> str | None:
    """The database's revision (None: an empty database)."""
    from alembic.runtime.migration import MigrationContext

    from .db import engine_for

    if connection is not None:
        return MigrationContext.configure(connection).get_current_revision()
    with engine_for(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    lock = Path(database).with_name(Path(database).name + ".migrate-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        yield


def migrate(url: str) -> tuple[str | None, str]:
    """Bring the schema to the newest revision, safely from several processes at once; returns the
    revision found (under the lock: None for an empty database) and the one left."""
    from alembic import command

    config = _config(url)
    if url.startswith("postgresql"):
        engine = create_engine(url, poolclass=pool.NullPool)
        try:
            with engine.connect() as connection, connection.begin():
                # Held until this transaction ends: the next process waits, then finds nothing to do.
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": MIGRATE_LOCK_KEY})
                before = current_revision(url, connection)
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        finally:
            engine.dispose()
    else:
        with _sqlite_file_lock(url):
            before = current_revision(url)
            command.upgrade(config, "head")
    return before, head_revision()


def check_schema(url: str) -> None:
    """Raise one line when the database is behind this version (an empty one included)."""
    head, current = head_revision(), current_revision(url)
    if current == head:
        return
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory.from_config(_config(url)).walk_revisions()}
    if current is not None and current not in known:
        # A newer version migrated already (a rolling update): its migrations only add, so this one runs.
        log.event("schema_newer", database=current, this_version=head)
        return
    raise LipsyncError(f"the job database's schema is at revision {current or 'none (an empty database)'} but this "
                       f"version needs {head}: run `lipsync migrate` once (the chart's migration job does) and start again")


def wait_for_schema(url: str, timeout_s: float) -> None:
    """`check_schema`, waiting up to `timeout_s` for a migration that runs elsewhere (another pod's)."""
    deadline = time.monotonic() + timeout_s
    last_log = 0.0
    while True:
        try:
            check_schema(url)
            return
        except LipsyncError as exc:
            if time.monotonic() >= deadline:
                raise
            if time.monotonic() - last_log > SCHEMA_WAIT_LOG_S:
                log.event("waiting_for_schema", detail=str(exc))
                last_log = time.monotonic()
        time.sleep(1.0)
