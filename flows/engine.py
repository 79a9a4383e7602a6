"""One adjustment to Prefect's flow engine, applied when any docroute flow module is imported.

Prefect 3.8 emits a heartbeat for every flow run from a daemon thread that sleeps in 1 s steps,
and the synchronous engine joins that thread when the run ends: every run waits up to a second
(0.5 s on average) after its work is done. That is a third of an idle poll, and it lands on
every sync, backfill chunk and status run. The asynchronous engine already skips the join
(`join_on_exit=False`); we ask the synchronous one to do the same. Heartbeats, and with them
crashed-run detection, are unchanged: the thread still beats every
PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds while the run is alive, checks the stop signal before
each beat and second, and ends by itself within a second of the run's end.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import prefect.flow_engine as _engine

_original = _engine._send_heartbeats


@contextmanager
def _send_heartbeats_without_join(engine, join_on_exit: bool = True):
    with _original(engine, join_on_exit=False):
        yield


def install() -> bool:
    """Patch the engine once; a Prefect whose heartbeat helper has another shape is left alone."""
    if getattr(_engine._send_heartbeats, "__docroute__", False):
        return True
    if "join_on_exit" not in inspect.signature(_original).parameters:
        return False
    _send_heartbeats_without_join.__docroute__ = True  # type: ignore[attr-defined]
    _engine._send_heartbeats = _send_heartbeats_without_join
    return True


install()
