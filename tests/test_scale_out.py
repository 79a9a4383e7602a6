"""Scale-out on Prefect, as docs/deployment.md runs it: the Prefect API on PostgreSQL started without
services, the services in their own process, prefect-redis for messaging, cache, causal ordering,
concurrency leases and docket (this machine's Redis), two docroute workers on one work pool, and the
ledger on the same PostgreSQL. The commands are the systemd units' (docs/deployment/*.service).

Two workers share 50 integrations and deliver every document exactly once, no run executing twice; a
worker killed in the middle of runs leaves them Crashed (never Running), they run again, and every
document is still delivered once; a worker restarted under its name picks up its pool again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import psycopg2
import pytest
import redis
import yaml

from tests.net import free_port

ROOT = Path(__file__).resolve().parent.parent
PG = dict(host="127.0.0.1", port=5432, user="postgres")
HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


def _database(name: str) -> None:
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    admin.close()


def _drop(name: str) -> None:
    admin = psycopg2.connect(dbname="postgres", **PG)
    admin.autocommit = True
    admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


class Cluster:
    """The production topology on this machine: API, services, two workers, PostgreSQL, Redis."""

    def __init__(self, root: Path, tag: str):
        self.root, self.tag = root, tag
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.prefect_db, self.ledger_db = f"prefect_{tag}", f"ledger_{tag}"
        self.redis_db = 7  # the tests' own Redis databases (7 and 8), flushed first
        self.procs: dict[str, subprocess.Popen] = {}
        self.pool = f"pool-{tag}"
        self.config_dir = root / "config"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DOCROUTE_"))}
        self.env.update({
            "PREFECT_API_URL": self.api,
            "PREFECT_HOME": str(root / "prefect-home"),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.prefect_db}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": "127.0.0.1",
            "PREFECT_REDIS_MESSAGING_PORT": "6379",
            "PREFECT_REDIS_MESSAGING_DB": str(self.redis_db),
            "PREFECT_SERVER_DOCKET_URL": f"redis://127.0.0.1:6379/{self.redis_db + 1}",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",  # its minimum
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1",
            "DOCROUTE_CONFIG_DIR": str(self.config_dir),
            "DOCROUTE_LEDGER_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{self.ledger_db}",
            "DOCROUTE_HOME": str(root / "home"),
        })

    def start(self) -> None:
        for db in (self.redis_db, self.redis_db + 1):
            redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
        _database(self.prefect_db)
        _database(self.ledger_db)
        self._spawn("api", [sys.executable, "-m", "prefect", "server", "start", "--no-services", "--host", "127.0.0.1", "--port", str(self.port)])
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{self.api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and self.procs["api"].poll() is None, self.log("api")[-3000:]
            time.sleep(0.5)
        self._spawn("services", [sys.executable, "-m", "prefect", "server", "services", "start"])

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = (self.root / f"{name}.log").open("w")
        # SIGINT at its default, as systemd starts them: a test run started in the background (nohup, CI)
        # would hand them SIGINT ignored, and Prefect's services process then never stops on it.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.procs[name] = proc
        return proc

    def worker(self, name: str) -> subprocess.Popen:
        return self._spawn(name, [sys.executable, "-m", "flows.cli", "worker", "--pool", self.pool, "--name", name, "--threads", "4"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def python(self, code: str, timeout: float = 300) -> str:
        out = self.run("-c", code, timeout=timeout)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        return out.stdout

    def stop(self) -> None:
        for name in [n for n in self.procs if n.startswith("w")] + ["services", "api"]:
            if name in self.procs:
                self.kill(name, signal.SIGINT)
        _drop(self.prefect_db)
        _drop(self.ledger_db)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, uuid.uuid4().hex[:8])
    with ExitStack() as stack:
        stack.callback(c.stop)
        c.start()
        yield c


# What runs inside the cluster, through the same public functions the CLI uses (a process of its own,
# pointed at the cluster's API by its environment).
SETUP = """
import json, sys
from pathlib import Path
from datetime import datetime, timedelta, timezone
from blocks.capture_inbox import CaptureInboxFolder
from blocks.local_folder import LocalFolderConnection
from blocks.webhook import WebhookConnection
from deployments.config import load_config
from deployments.deploy import apply_deployments, ensure_zombie_automation
from tasks.registry import register_block_types
args = json.loads(sys.argv[1])
register_block_types()
CaptureInboxFolder(path=args["inbox"], settle_seconds=0).save("inbox", overwrite=True)
LocalFolderConnection(base_folder=args["out"]).save("out", overwrite=True)
WebhookConnection(url=args["hook"], signing_secrets=[args["secret"]]).save("slow", overwrite=True)
names = apply_deployments(load_config(), work_pool=args["pool"])
ensure_zombie_automation(after=timedelta(seconds=40))  # deploy's is 90 s (three missed beats); one missed beat here
print(json.dumps([n for n in names if n.startswith("docroute-sync/")]))
"""

RUN_ALL = """
import asyncio, json, sys
from prefect.deployments import run_deployment
names = json.loads(sys.argv[1])
async def main():
    return [str((await run_deployment(n, timeout=0)).id) for n in names]
print(json.dumps(asyncio.run(main())))
"""

WAIT = """
import json, sys, time
from prefect.client.orchestration import get_client
ids, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
deadline = time.monotonic() + timeout
with get_client(sync_client=True) as client:
    while True:
        runs = [client.read_flow_run(i) for i in ids]
        if all(r.state and r.state.is_final() for r in runs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    out = []
    for r in runs:
        states = client.read_flow_run_states(r.id)
        out.append({"id": str(r.id), "state": r.state.type.value if r.state else None, "message": r.state.message if r.state else "",
                    "running": sum(1 for s in states if s.type.value == "RUNNING"),
                    "claimed": sum(1 for s in states if s.type.value == "PENDING"), "name": r.state.name if r.state else ""})
print(json.dumps(out))
"""


# A worker that dies right after its claim, before the engine's first heartbeat: a run of its own,
# claimed with the worker's `claim`, and the process exits.
CLAIM_AND_DIE = """
import json, sys
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from flows.worker import claim
run = run_deployment(sys.argv[1], timeout=0)
with get_client(sync_client=True) as client:
    assert claim(client, run.id, "w-dead 1")
print(json.dumps(str(run.id)))
"""


def write_clients(cluster: Cluster, clients: int, slow: set[str] = frozenset()) -> list[str]:
    (cluster.config_dir / "clients").mkdir(parents=True, exist_ok=True)
    (cluster.config_dir / "templates").mkdir(exist_ok=True)
    (cluster.config_dir / "lookups").mkdir(exist_ok=True)
    keys = []
    for c in range(clients):
        client = f"c{c:02d}"
        integrations = []
        for t in range(10):
            key = f"{client}/t{t}"
            integrations.append({
                "name": f"t{t}", "source": "capture-inbox-folder/inbox",
                "connection": "webhook-connection/slow" if key in slow else "local-folder-connection/out",
                "activated_at": "2026-01-01T00:00:00Z", "filters": {"document_types": [f"t{t}"]}, "retry_delay": 0.05,
                "mapping": {"folder": "{client}/{doc_type}", "filename": "{doc_id}.{ext}"},
            })
            keys.append(key)
        (cluster.config_dir / "clients" / f"{client}.yaml").write_text(yaml.safe_dump({"client": client, "integrations": integrations}))
    return keys


def deliveries(cluster: Cluster, keys: list[str]) -> dict[str, int]:
    import json

    code = (
        "import json, sys\nfrom tasks.ledger import Ledger\nfrom tasks.settings import get_settings\n"
        "led = Ledger(get_settings().resolved_ledger_url())\nout = {}\n"
        "for key in json.loads(sys.argv[1]):\n"
        "    for e in led.events_of(key):\n"
        "        if e['event'] in ('delivered', 'already-present'):\n"
        "            out[e['doc_id']] = out.get(e['doc_id'], 0) + 1\n"
        "print(json.dumps(out))\n"
    )
    out = cluster.run("-c", code, json.dumps(keys))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_two_workers_share_a_pool_and_a_killed_worker_s_runs_are_crashed_then_run_again(cluster):
    import json

    from tasks.sources.seed import write_document
    from tests.connectors.harness_webhook import Receiver, Scripted, new_secret

    secret = new_secret()
    receiver = Receiver([secret])
    try:
        inbox, out = cluster.root / "inbox", cluster.root / "out"
        inbox.mkdir()
        out.mkdir()
        slow = {f"c04/t{t}" for t in range(10)}  # one client's ten integrations post to a slow receiver
        keys = write_clients(cluster, 5, slow)
        expected = []
        for key in keys:
            client, t = key.split("/")
            for n in range(2):
                doc_id = f"{client}-{t}-{n}"
                write_document(inbox, doc_id, client=client, doc_type=t, approved_at=HOUR_AGO)
                expected.append(doc_id)
        setup = cluster.run("-c", SETUP, json.dumps({"inbox": str(inbox), "out": str(out), "hook": receiver.url, "secret": secret,
                                                     "pool": cluster.pool}))
        assert setup.returncode == 0, setup.stderr[-3000:]
        names = json.loads(setup.stdout)
        assert len(names) == 50
        cluster.worker("w-a")
        cluster.worker("w-b")
        fast = [n for n in names if not n.split("/")[1].startswith("c04-")]
        runs = json.loads(cluster.run("-c", RUN_ALL, json.dumps(fast)).stdout)
        states = json.loads(cluster.run("-c", WAIT, json.dumps(runs), "240").stdout)
        assert {s["state"] for s in states} == {"COMPLETED"}, [s for s in states if s["state"] != "COMPLETED"][:3]
        assert all(s["claimed"] == 1 and s["running"] <= 1 for s in states), states  # no run executed twice
        assert {s["name"] for s in states} == {"Completed"}  # each had documents: the engine ran (no Idle shortcut)
        # the two workers shared the runs
        assert "running in docroute worker 'w-a'" in cluster.log("w-a") and "running in docroute worker 'w-b'" in cluster.log("w-b")

        # the slow client's runs: kill a worker in the middle of them
        receiver.script(*[Scripted(None, delay=1.5) for _ in range(60)])
        slow_names = [n for n in names if n.split("/")[1].startswith("c04-")]
        slow_runs = json.loads(cluster.run("-c", RUN_ALL, json.dumps(slow_names)).stdout)
        deadline = time.monotonic() + 60
        while len(receiver.deliveries) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        cluster.kill("w-a")  # SIGKILL in the middle of its runs: they stop sending heartbeats
        ended = json.loads(cluster.run("-c", WAIT, json.dumps(slow_runs), "180").stdout)
        assert all(s["state"] in ("CRASHED", "COMPLETED") for s in ended), [s for s in ended if s["state"] not in ("CRASHED", "COMPLETED")]  # never left Running or Pending
        crashed = [s for s in ended if s["state"] == "CRASHED"]
        assert crashed and all("heartbeat" in (s["message"] or "") for s in crashed), ended
        cluster.kill("w-b", signal.SIGINT)

        # no worker is running now: a run claimed by a worker that died before the engine started
        died = cluster.run("-c", CLAIM_AND_DIE, fast[0])
        assert died.returncode == 0, died.stderr[-3000:]
        orphan = json.loads(died.stdout)

        # the next schedule runs them again, on the killed worker restarted under its name, alone now
        receiver.script(*[Scripted(None) for _ in range(60)])
        cluster.worker("w-a")
        rerun = [slow_names[slow_runs.index(s["id"])] for s in crashed]
        again = json.loads(cluster.run("-c", RUN_ALL, json.dumps(rerun)).stdout)
        finished = json.loads(cluster.run("-c", WAIT, json.dumps(again), "240").stdout)
        assert {s["state"] for s in finished} == {"COMPLETED"}, finished[:3]
        assert "running in docroute worker 'w-a'" in cluster.log("w-a")  # it picked up its pool again
        # the orphan was never Running and sent no heartbeat; it is crashed all the same, not left Pending
        left = json.loads(cluster.run("-c", WAIT, json.dumps([orphan]), "180").stdout)
        assert [(s["state"], s["running"]) for s in left] == [("CRASHED", 0)] and "heartbeat" in left[0]["message"], left
        counts = deliveries(cluster, keys)
        assert sorted(counts) == sorted(expected)  # every document delivered
        assert set(counts.values()) == {1}  # and recorded once
        # a webhook cannot be asked what it holds: a crashed run's chunk in flight (two documents here) is sent
        # again with the same webhook-id, which the receiver dedups; every one of the 20 arrived once
        assert len(receiver.deliveries) == 20 and sum(receiver.repeats.values()) <= 2 * len(crashed)
    finally:
        receiver.stop()
