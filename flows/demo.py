"""The demo: a local Prefect server, a seeded capture inbox, local stand-ins for the partner systems (a
GetMyInvoices account, an Infor ION API gateway, an e-invoicing access point in certification mode; the
test fakes in tests/fakes/), deployments on a docroute work pool run by one warm docroute worker, one
sync of each integration, then one confirmation run for the access point's verdicts.

    python -m flows.demo          # runs everything, then keeps running the schedules until Ctrl-C
    python -m flows.demo --once   # runs everything, prints the report, stops
    python -m flows.demo --serve  # the same with Prefect's runner (a process per run) instead of the worker
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from flows.local_server import server_command

REPO = Path(__file__).resolve().parent.parent
DEFAULT_API = "http://127.0.0.1:4200/api"
DEMO_POOL = "docroute"


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
        server_command(url.host, url.port),
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},  # no telemetry: this machine may be offline
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


class WebhookReceiver:
    """A stand-in for a client's AP system: checks each Standard Webhooks signature, stores the body."""

    def __init__(self, folder: Path, secret: str):
        import base64
        import hashlib
        import hmac
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        key = base64.b64decode(secret.removeprefix("whsec_"))
        folder.mkdir(parents=True, exist_ok=True)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                msg_id, stamp = self.headers.get("webhook-id", ""), self.headers.get("webhook-timestamp", "")
                mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
                expected = "v1," + base64.b64encode(mac).decode()
                ok = any(hmac.compare_digest(expected, sig) for sig in self.headers.get("webhook-signature", "").split())
                if ok and self.headers.get("Content-Type", "").startswith("application/json"):
                    doc = json.loads(body).get("document")
                    if doc:
                        (folder / f"{doc['id']}.json").write_bytes(body)
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/docroute"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def save_blocks(data: Path, webhook: WebhookReceiver, webhook_secret: str) -> None:
    import secrets

    from prefect_aws import AwsCredentials

    from blocks.capture_inbox import CaptureInboxFolder
    from blocks.local_folder import LocalFolderConnection
    from blocks.s3 import S3Connection
    from blocks.sftp import SftpConnection
    from blocks.smtp import SmtpConnection
    from blocks.webhook import WebhookConnection
    from tasks.registry import register_block_types

    register_block_types()
    CaptureInboxFolder(path=str(data / "inbox"), settle_seconds=2).save("capture-inbox", overwrite=True)
    LocalFolderConnection(base_folder=str(data / "out" / "erp-import"), test_folder=str(data / "out" / "erp-import-test")).save(
        "erp-import", overwrite=True
    )
    LocalFolderConnection(base_folder=str(data / "out" / "purchasing"), if_exists="overwrite").save("purchasing", overwrite=True)
    for name in ("erp-import", "erp-import-test", "purchasing"):
        (data / "out" / name).mkdir(parents=True, exist_ok=True)
    WebhookConnection(url=webhook.url, signing_secrets=[webhook_secret]).save("initech-ap", overwrite=True)
    # On-demand (alternate) exports: examples of each connector's settings, pointing at endpoints
    # that do not run in the demo. Edit the blocks in the UI to use them.
    creds = AwsCredentials(aws_access_key_id="demo-key", aws_secret_access_key=secrets.token_urlsafe(24),
                           aws_client_parameters={"endpoint_url": "http://127.0.0.1:9000"})
    S3Connection(credentials=creds, bucket_name="initech-archive", key_prefix="docroute/").save("initech-archive", overwrite=True)
    SmtpConnection(host="127.0.0.1", port=2525, security="none", from_address="docroute@example.com").save("initech-mailbox", overwrite=True)
    SftpConnection(
        host="127.0.0.1", port=2222, username="docroute", password=secrets.token_urlsafe(16),
        host_key="SHA256:" + "A" * 43, base_folder="/upload",
    ).save("partner-sftp", overwrite=True)


class PartnerSystems:
    """The partner systems the demo's clients use, started in this process on free ports of 127.0.0.1:
    Umbrella's GetMyInvoices account, Hooli's Infor ION API gateway (IDM + ION) and Vandelay's access
    point. Their blocks are saved on the server; `stop()` ends them."""

    PROCESSING_SECONDS = 2.0  # how long the access point takes to validate a document

    def __init__(self) -> None:
        from tests.fakes.access_point import start_seeded
        from tests.fakes.getmyinvoices_api import start_demo
        from tests.fakes.infor_gateway import start_gateway

        self.gmi_url, self.gmi_key, self.gmi = start_demo(docs=6)
        self.infor_url, self.ionapi = start_gateway(tenant="HOOLI_TST")
        self.access_point, self.access_point_fields = start_seeded(company="VANDELAY-CERT",
                                                                   processing_seconds=self.PROCESSING_SECONDS)

    def save_blocks(self) -> None:
        from pydantic import SecretStr

        from blocks.access_point import AccessPointConnection
        from blocks.getmyinvoices import GetMyInvoicesSource
        from blocks.infor import InforIdmIonConnection, InforIonApiConnection

        GetMyInvoicesSource(api_key=SecretStr(self.gmi_key), base_url=self.gmi_url, client="umbrella").save("umbrella-gmi", overwrite=True)
        InforIonApiConnection.from_ionapi(self.ionapi).save("hooli-ionapi", overwrite=True)
        InforIdmIonConnection(ionapi=InforIonApiConnection.load("hooli-ionapi"), accounting_entity="100").save("hooli-infor", overwrite=True)
        AccessPointConnection(**self.access_point_fields).save("vandelay-ap", overwrite=True)

    def stop(self) -> None:
        self.gmi.stop()
        self.access_point.stop()  # the Infor gateway is a daemon thread: it ends with this process


def seed_partner_clients(inbox: Path, now: datetime | None = None) -> int:
    """Invoices for Hooli (to Infor) and Vandelay (to the access point) in the capture inbox, with the
    fields their mappings read (supplier number and VAT, net, tax, total). Vandelay's come without a UBL
    XML, so docroute generates and validates one."""
    from tasks.sources.seed import invoice_metadata, write_document

    rng = random.Random(11)
    now = now or datetime.now(timezone.utc)
    count = 0
    for client, prefix, n in (("hooli", "HOO", 4), ("vandelay", "VAN", 3)):
        for i in range(1, n + 1):
            approved = now - timedelta(hours=rng.uniform(1, 20))
            write_document(inbox, f"{prefix}-INV-{3000 + i}", client=client, approved_at=approved,
                           metadata=invoice_metadata(rng, f"{prefix}-2026-{3000 + i}", approved), pdf_size=rng.randint(20_000, 60_000))
            count += 1
    return count


def start_worker(pool: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`docroute worker --pool <pool>` in its own process group, logging to `log`: every flow run of the
    pool runs in that one warm process."""
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "worker", "--pool", pool, "--name", f"{pool}-worker"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True,
    )


def serve_deployments(log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Serve every enabled integration's deployment (`python -m deployments.deploy`) in its own
    process group, logging to `log`."""
    return subprocess.Popen(
        [sys.executable, "-m", "deployments.deploy"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
        start_new_session=True,
    )


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


async def _run_all(names: list[str], timeout: float = 600, reuse_due: bool = True) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )
    from prefect.deployments import run_deployment

    deadline = time.monotonic() + timeout
    async with get_client() as client:
        # A deployment's first scheduled run is due as soon as it is deployed: wait for that one rather than
        # start a second, which would queue behind it for the deployment's concurrency slot (limit 1).
        runs = {}
        for name in names:
            deployment = await client.read_deployment_by_name(name)
            due = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(
                    before_=datetime.now(timezone.utc) + timedelta(seconds=5))),
                limit=1,
            )
            runs[name] = due[0] if due and reuse_due else await run_deployment(name, timeout=0)
        while True:
            states = {name: await client.read_flow_run(run.id) for name, run in runs.items()}
            if all(r.state and r.state.is_final() for r in states.values()) or time.monotonic() > deadline:
                return states
            await asyncio.sleep(1)


def report(states: dict[str, object], ui: str, data: Path, confirm_run: object | None = None) -> None:
    from deployments.config import load_config
    from tasks.ledger import Ledger

    config = load_config(check_blocks=False)
    ledger = Ledger.from_settings()
    print("\n=== docroute demo: what happened ===")
    for name, run in states.items():
        key = run.parameters["integration"]
        counts = ledger.counts(key)
        state = run.state.name if run.state else "?"
        if state == "Idle":
            state = "Idle: nothing new since the last run"
        print(f"\n{key}  [{state}]  {', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'nothing'}")
        print(f"  run:    {ui}/runs/flow-run/{run.id}")
        for row in ledger.rows(key, statuses=("failed", "needs-attention")):
            print(f"  FAILED  {row['doc_id']}: {row['last_error']}")
        if later := [r for r in ledger.rows(key) if r["submitted_at"] is not None]:
            where = f" (run {ui}/runs/flow-run/{confirm_run.id})" if confirm_run is not None else ""
            print(f"  confirmed later by the destination{where}:")
            for row in later:
                verdict = {"delivered": "accepted", "submitted": "waiting"}.get(row["status"], row["status"])
                print(f"    {verdict:9} {row['doc_id']}  {row['remote_ref'] or ''}{'  ' + row['last_error'] if row['last_error'] and verdict != 'accepted' else ''}")
        integ = config.get(key)
        print(f"  report: Artifacts page, key sync-{integ.slug}")
    ledger.dispose()
    print("\nWhere to look:")
    print(f"  Prefect UI:       {ui}  (Runs, Deployments to change or pause schedules, Artifacts for sync reports)")
    print(f"  Exported files:   {data / 'out'}")
    print(f"  Capture inbox:    {data / 'inbox'}")
    print(f"  Ledger (SQLite):  {data / 'home' / 'ledger.db'}")
    print("  One document (ACME-INV-2001) has metadata but no PDF: its run ends Failed and names it, on purpose.")


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="docroute demo")
    parser.add_argument("--once", action="store_true", help="run one sync per integration, report, and stop")
    parser.add_argument("--data", type=Path, default=REPO / "demo-data", help="demo folder (recreated on each start)")
    parser.add_argument("--serve", action="store_true", help="serve the deployments (a process per run) instead of a docroute worker")
    args = parser.parse_args(argv)

    # Ctrl-C (SIGINT) and a plain `kill` (SIGTERM) both stop everything the demo started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
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
    partners: PartnerSystems | None = None
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Prefect read its settings when `flows` was imported, before PREFECT_API_URL was set above: without
    # this, this process would start a temporary server of its own instead of using the demo's.
    settings = temporary_settings(updates={PREFECT_API_URL: api})
    settings.__enter__()
    try:
        from deployments.config import load_config
        from deployments.deploy import (
            CONFIRM_DEPLOYMENT,
            CONFIRM_FLOW,
            FLOW_NAME,
            apply_deployments,
            deployment_name,
        )
        from tasks.sources.seed import seed_demo_inbox

        counts = seed_demo_inbox(data / "inbox")
        counts["approved"] += seed_partner_clients(data / "inbox")
        print(f"Seeded {data / 'inbox'}: {counts}")
        partners = PartnerSystems()
        print(f"Partner systems: GetMyInvoices {partners.gmi_url}, Infor ION API gateway {partners.infor_url}, "
              f"access point {partners.access_point.url} (certification)")
        import base64
        import secrets

        webhook_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        webhook = WebhookReceiver(data / "out" / "webhook-received", webhook_secret)
        save_blocks(data, webhook, webhook_secret)
        partners.save_blocks()
        config = load_config()  # fails here, naming file/integration/field, if the config is wrong
        names = [f"{FLOW_NAME}/{deployment_name(i)}" for i in config.integrations.values() if i.enabled]
        on_demand = [i.key for i in config.integrations.values() if not i.enabled]
        if args.serve:
            print(f"Serving {len(names)} deployments (log: {data / 'serve.log'}) ...")
            serving = serve_deployments(data / "serve.log")
        else:
            apply_deployments(config, work_pool=DEMO_POOL)
            print(f"Deployed {len(names)} integrations on work pool {DEMO_POOL}; one docroute worker runs them "
                  f"(log: {data / 'worker.log'}) ...")
            serving = start_worker(DEMO_POOL, data / "worker.log")
        confirm = f"{CONFIRM_FLOW}/{CONFIRM_DEPLOYMENT}"
        asyncio.run(_wait_for_deployments([*names, confirm]))
        print("Running one sync per integration ...")
        states = asyncio.run(_run_all(names))
        # the access point decides a little later: one confirmation run records its verdicts
        time.sleep(PartnerSystems.PROCESSING_SECONDS + 0.5)
        confirm_run = asyncio.run(_run_all([confirm], reuse_due=False))[confirm]  # a new one: after the verdicts
        report(states, api.removesuffix("/api"), data, confirm_run)
        from flows.cli import main as docroute

        print("\n=== docroute status (the docroute-status flow; Artifacts page, key integration-status) ===")
        docroute(["status"])
        print(f"  Webhook receiver: {webhook.url} -> {data / 'out' / 'webhook-received'}")
        print(f"  On-demand exports (deployed, not scheduled; blocks point at example endpoints): {', '.join(on_demand)}")
        if not args.once:
            print("\nRunning the schedules; change or pause them in the UI (Deployments). Ctrl-C to stop.")
            while serving.poll() is None:
                time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...")
    finally:
        settings.__exit__(None, None, None)
        if partners is not None:
            partners.stop()
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
