"""docroute's Prefect flows."""

from flows import engine as _engine  # noqa: F401 - see flows/engine.py: no 1 s wait at the end of every run
