"""Helpers shared by the benchmarks: a Prefect server, CPU of a process tree, result tables and files.

Import this before anything imports prefect: `use_prefect_server` sets PREFECT_API_URL, which
Prefect reads when it is imported.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@dataclass
class PrefectServer:
    """A Prefect API server: one started here (proc set), or an existing one (proc None)."""

    api: str
    proc: subprocess.Popen | None
    pid: int | None  # the server's process, for CPU accounting (None: unknown)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and only its children
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _pid_listening(port: int) -> int | None:
    try:
        import psutil

        for conn in psutil.net_connections("tcp"):
            if conn.status == "LISTEN" and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except Exception:  # noqa: BLE001 - not allowed to see other processes: no server CPU then
        return None
    return None


def use_prefect_server(work: Path, reuse: bool = True, database_url: str | None = None,
                       extra_env: dict[str, str] | None = None) -> PrefectServer:
    """Reuse the server in PREFECT_API_URL if one answers there, else start `prefect server start` (flows.local_server)
    (SQLite under `work`, or `database_url`) on a free port. Sets PREFECT_API_URL for this process and its children."""
    api = os.environ.get("PREFECT_API_URL")
    if reuse and api and _healthy(api):
        from urllib.parse import urlparse

        port = urlparse(api).port
        return PrefectServer(api, None, _pid_listening(port) if port else None)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = work / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false", **(extra_env or {}))
    if database_url:
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database_url
    # PREFECT_API_URL first, then the import: importing `flows` loads Prefect's settings, and settings
    # loaded without it would make this process start a temporary server of its own.
    os.environ["PREFECT_API_URL"] = api
    from flows.local_server import server_command

    log = (work / "prefect-server.log").open("w")
    proc = subprocess.Popen(
        server_command("127.0.0.1", port),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not _healthy(api):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the Prefect server did not start; see {work / 'prefect-server.log'}")
        time.sleep(0.5)
    return PrefectServer(api, proc, proc.pid)


def postgres_cpu() -> float:
    """CPU-seconds used so far by the machine's PostgreSQL processes that are alive now (the server and
    its connections' backends; a backend that exited in between is not counted)."""
    import psutil

    total = 0.0
    for p in psutil.process_iter(["name"]):
        if p.info["name"] in ("postgres", "postmaster"):
            try:
                t = p.cpu_times()
            except psutil.Error:
                continue
            total += t.user + t.system
    return total


def machine_busy() -> tuple[float, float]:
    """(busy CPU-seconds, all CPU-seconds) of the whole machine so far, every core together."""
    import psutil

    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0)
    return sum(t) - idle, sum(t)


def tree_cpu(pid: int | None) -> float:
    """CPU-seconds used so far by a process and all its descendants, including exited children
    it has waited for (Linux counts those in the parent's children_user/children_system)."""
    if pid is None:
        return float("nan")
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.NoSuchProcess:  # exited between listing and reading: counted by its parent once reaped
            continue
    return total


def tree_rss_mb(pid: int | None) -> float:
    import psutil

    if pid is None:
        return float("nan")
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20
    except psutil.NoSuchProcess:
        return float("nan")


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def print_table(title: str, rows: list[tuple], headers: tuple) -> None:
    """A plain text table; rows are tuples of already formatted cells."""
    cells = [tuple(str(c) for c in headers)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def write_result(name: str, result: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    return path


def machine() -> dict:
    return {"cores": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2), "python": sys.version.split()[0]}


def docroute_env(work: Path, api: str) -> dict[str, str]:
    """Point this process (and the subprocesses it starts) at a config folder, a SQLite ledger and
    a home under `work`, and at the Prefect server `api`; returns the environment."""
    env = {
        **os.environ,
        "DOCROUTE_CONFIG_DIR": str(work / "cfg"),
        "DOCROUTE_LEDGER_URL": f"sqlite:///{work}/ledger.db",
        "DOCROUTE_HOME": str(work / "home"),
        "PREFECT_API_URL": api,
    }
    env.pop("DOCROUTE_LEDGER_BLOCK", None)
    os.environ.update(env)
    os.environ.pop("DOCROUTE_LEDGER_BLOCK", None)
    return env
