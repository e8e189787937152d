"""Alembic environment: the URL comes from the caller (`db.migrate`), the metadata from `db.Base`."""
from alembic import context
from sqlalchemy import pool

from lipsync_triton.service.db import Base, engine_for

config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = engine_for(url) if url.startswith("sqlite") else None
if engine is None:
    from sqlalchemy import create_engine

    engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
