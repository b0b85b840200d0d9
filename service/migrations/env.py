"""Alembic environment: the URL comes from the config (set by service.db.migrate) or ``-x url=``."""

from __future__ import annotations

from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from service.db.models import Base

config = context.config
if config.config_file_name and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

url: str | None = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
    "sqlalchemy.url"
)
if not url:
    raise RuntimeError("no database URL: pass -x url=... or use service.db.migrate.upgrade(url)")

target_metadata = Base.metadata
#: Replicas starting together migrate one at a time (PostgreSQL advisory lock, held to commit).
MIGRATION_LOCK_KEY = 0x6175746F  # "auto"


def run(url: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            context.run_migrations()
    engine.dispose()


run(url)
