"""Cancel requests for flow runs running in this process (the docroute worker's), checked by the flows.

The docroute worker runs many flow runs in one process, so it cannot kill one; when a run enters
Cancelling (the UI's Cancel), the worker calls `request(run_id)`, and the sync and backfill flows
stop at their next safe point (between documents, between chunks) and end Cancelled.
"""

from __future__ import annotations

import threading
from uuid import UUID

_requested: set[str] = set()
_lock = threading.Lock()


def request(run_id: UUID | str) -> None:
    with _lock:
        _requested.add(str(run_id))


def requested(run_id: UUID | str | None) -> bool:
    with _lock:
        return run_id is not None and str(run_id) in _requested


def forget(run_id: UUID | str) -> None:
    with _lock:
        _requested.discard(str(run_id))
