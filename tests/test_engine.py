"""flows/engine.py: the end of a run no longer joins the heartbeat thread; heartbeats (crash detection) go on.

The time saved is measured by the benchmarks (bench/idle_bench.py, bench/sftp_bench.py), not here."""

from __future__ import annotations

import time

import prefect.flow_engine as fe
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

import flows  # noqa: F401 - importing any docroute flow installs the adjustment


@flow(name="docroute-engine-probe")
def _probe(hold: float = 0.0) -> str:
    time.sleep(hold)
    return "done"


def test_heartbeats_are_still_sent_and_the_run_does_not_join_their_thread(prefect_server):
    assert getattr(fe._send_heartbeats, "__docroute__", False), "the engine adjustment is not installed"
    state = _probe(return_state=True)
    assert state.is_completed()
    run_id = str(state.state_details.flow_run_id)
    with get_client(sync_client=True) as client:  # crashed-run detection still gets its heartbeat
        deadline = time.monotonic() + 30
        events = []
        while time.monotonic() < deadline and not events:
            events = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                    resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
                ),
                limit=50,
            ).events
            time.sleep(0.3)
    assert len(events) == 1, f"expected one heartbeat of run {run_id}, got {len(events)}"
