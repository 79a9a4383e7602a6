"""flows.local_server: the local Prefect server collects its garbage off the event loop's thread."""

from __future__ import annotations

import subprocess
import sys

from flows.local_server import server_command

# In a fresh interpreter: cyclic garbage whose finalizer records the thread it ran in.
PROBE = """
import gc, threading, time
from flows.local_server import collect_in_background

collect_in_background(every=0.02)
where = []

class Cycle:
    def __init__(self):
        self.me = self
    def __del__(self):
        where.append(threading.current_thread().name)

for _ in range(50):
    Cycle()
deadline = time.monotonic() + 10
while len(where) < 50 and time.monotonic() < deadline:
    time.sleep(0.05)
print(gc.isenabled(), len(where), sorted(set(where)))
"""


def test_cyclic_garbage_is_collected_in_the_collector_thread_not_the_main_one():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split(None, 2) == ["False", "50", "['docroute-gc']\n"]


def test_the_server_command_runs_prefect_server_start_through_the_launcher():
    command = server_command("127.0.0.1", 4999)
    assert command[1:] == ["-m", "flows.local_server", "--host", "127.0.0.1", "--port", "4999"]
    help_text = subprocess.run([*command[:3], "--help"], capture_output=True, text=True, timeout=120).stdout
    assert "--no-services" in help_text  # the options are `prefect server start`'s own
