"""Alembic environment: always given a connection by tasks.ledger_migrations.upgrade (no ini file, no URL)."""

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch: SQLite cannot ALTER most things; Alembic's batch mode rebuilds the table instead.
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
