"""The demo: a local Prefect server, a seeded capture inbox, served deployments, one sync each.

    python -m flows.demo          # runs everything, then keeps serving the schedules until Ctrl-C
    python -m flows.demo --once   # runs everything, prints the report, stops
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
DEFAULT_API = "http://127.0.0.1:4200/api"


def _healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_server(api: str, log: Path) -> subprocess.Popen | None:
    """Use the Prefect server at `api`, or start one on SQLite if none runs there."""
    if _healthy(api):
        print(f"Using the Prefect server at {api}")
        return None
    url = httpx.URL(api)
    if url.host not in ("127.0.0.1", "localhost"):
        sys.exit(f"No Prefect server answers at {api}; start it, or unset PREFECT_API_URL for a local one.")
    print(f"Starting a local Prefect server on {url.host}:{url.port} (SQLite; log: {log}) ...")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", url.host, "--port", str(url.port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while not _healthy(api):
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"The Prefect server did not start; see {log}")
        time.sleep(1)
    return proc


def save_blocks(data: Path) -> None:
    from blocks.base import register_block_types
    from blocks.capture_inbox import CaptureInboxFolder
    from blocks.local_folder import LocalFolderConnection

    register_block_types()
    CaptureInboxFolder(path=str(data / "inbox"), settle_seconds=2).save("capture-inbox", overwrite=True)
    LocalFolderConnection(base_folder=str(data / "out" / "erp-import"), test_folder=str(data / "out" / "erp-import-test")).save(
        "erp-import", overwrite=True
    )
    LocalFolderConnection(base_folder=str(data / "out" / "purchasing"), if_exists="overwrite").save("purchasing", overwrite=True)
    for name in ("erp-import", "erp-import-test", "purchasing"):
        (data / "out" / name).mkdir(parents=True, exist_ok=True)


async def _wait_for_deployments(names: list[str], timeout: float = 120) -> dict[str, object]:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    found: dict[str, object] = {}
    async with get_client() as client:
        while len(found) < len(names):
            for name in names:
                if name not in found:
                    try:
                        found[name] = await client.read_deployment_by_name(name)
                    except Exception:  # noqa: BLE001 - not created yet
                        pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployments not served in time: {sorted(set(names) - set(found))}")
            await asyncio.sleep(0.5)
    return found


async def _run_all(names: list[str], timeout: float = 600) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    runs = {name: await run_deployment(name, timeout=0) for name in names}
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            states = {name: await client.read_flow_run(run.id) for name, run in runs.items()}
            if all(r.state and r.state.is_final() for r in states.values()) or time.monotonic() > deadline:
                return states
            await asyncio.sleep(1)


def report(states: dict[str, object], ui: str, data: Path) -> None:
    from deployments.config import load_config
    from tasks.ledger import Ledger

    config = load_config(check_blocks=False)
    ledger = Ledger.from_settings()
    print("\n=== docroute demo: what happened ===")
    for name, run in states.items():
        key = run.parameters["integration"]
        counts = ledger.counts(key)
        state = run.state.name if run.state else "?"
        print(f"\n{key}  [{state}]  {', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'nothing'}")
        print(f"  run:    {ui}/runs/flow-run/{run.id}")
        for row in ledger.rows(key, statuses=("failed", "needs-attention")):
            print(f"  FAILED  {row['doc_id']}: {row['last_error']}")
        integ = config.get(key)
        print(f"  report: Artifacts page, key sync-{integ.slug}")
    ledger.dispose()
    print("\nWhere to look:")
    print(f"  Prefect UI:       {ui}  (Runs, Deployments to change or pause schedules, Artifacts for sync reports)")
    print(f"  Exported files:   {data / 'out'}")
    print(f"  Capture inbox:    {data / 'inbox'}")
    print(f"  Ledger (SQLite):  {data / 'home' / 'ledger.db'}")
    print("  One document (ACME-INV-2001) has metadata but no PDF: its run ends Failed and names it, on purpose.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="docroute demo")
    parser.add_argument("--once", action="store_true", help="run one sync per integration, report, and stop")
    parser.add_argument("--data", type=Path, default=REPO / "demo-data", help="demo folder (recreated on each start)")
    args = parser.parse_args(argv)

    data: Path = args.data.resolve()
    if data.exists():
        shutil.rmtree(data)
    (data / "home").mkdir(parents=True)
    api = os.environ.get("PREFECT_API_URL") or DEFAULT_API
    os.environ["PREFECT_API_URL"] = api
    os.environ["DOCROUTE_HOME"] = str(data / "home")
    os.environ.pop("DOCROUTE_LEDGER_URL", None)
    os.environ.pop("DOCROUTE_LEDGER_BLOCK", None)
    server = ensure_server(api, data / "prefect-server.log")
    serving: subprocess.Popen | None = None
    try:
        from deployments.config import load_config
        from deployments.deploy import FLOW_NAME, deployment_name
        from tasks.sources.seed import seed_demo_inbox

        counts = seed_demo_inbox(data / "inbox")
        print(f"Seeded {data / 'inbox'}: {counts}")
        save_blocks(data)
        config = load_config()  # fails here, naming file/integration/field, if the config is wrong
        names = [f"{FLOW_NAME}/{deployment_name(i)}" for i in config.integrations.values()]
        print(f"Serving {len(names)} deployments (log: {data / 'serve.log'}) ...")
        serving = subprocess.Popen(
            [sys.executable, "-m", "deployments.deploy"],
            stdout=(data / "serve.log").open("w"),
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        asyncio.run(_wait_for_deployments(names))
        print("Running one sync per integration ...")
        states = asyncio.run(_run_all(names))
        report(states, api.removesuffix("/api"), data)
        if not args.once:
            print("\nServing the schedules; change or pause them in the UI. Ctrl-C to stop.")
            while serving.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...")
    finally:
        for proc in (serving, server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    print("Stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
