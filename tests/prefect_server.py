"""A real Prefect server for a test session: `prefect server start` (flows.local_server) on 127.0.0.1 with its own SQLite
database, every service (scheduler, triggers, actions, ...) and the UI, as an ops user runs it.

(prefect_test_harness starts an "ephemeral" server, which serves no UI: the analyst's view of a
failed run is tested in a real browser against this one.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from flows.local_server import server_command
from tests.net import free_port


@dataclass
class PrefectServer:
    url: str  # the API, http://127.0.0.1:<port>/api
    ui: str  # the UI, http://127.0.0.1:<port>
    home: Path
    proc: subprocess.Popen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def start_prefect_server(timeout: float = 180) -> PrefectServer:
    home = Path(tempfile.mkdtemp(prefix="docroute-prefect-"))
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT": "false",
        "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api",  # the UI's own calls (default: port 4200)
    }
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    proc = subprocess.Popen(
        server_command("127.0.0.1", port),
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the Prefect server did not start: {(home / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    return PrefectServer(f"{base}/api", base, home, proc)
