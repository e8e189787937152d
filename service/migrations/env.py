"""Alembic environment: the connection (or URL) comes from the caller (`schema.migrate`, which holds
the migration lock on it), the metadata from `db.Base`."""
from alembic import context
from sqlalchemy import create_engine, pool

from lipsync_triton.service.db import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
given = config.attributes.get("connection")


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


if given is not None:
    _run(given)
else:
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        _run(connection)
        connection.commit()
