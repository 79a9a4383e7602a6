"""Benchmark: 1,000 integrations at a 5-minute interval on this machine, with one docroute worker.

    python bench/scale_bench.py                        # SQLite Prefect server, 15 minutes (three cycles)
    python bench/scale_bench.py --database postgresql  # the Prefect server on PostgreSQL (127.0.0.1:5432)
    python bench/scale_bench.py --integrations 200 --minutes 6   # a smaller, quicker run

What it does, all on 127.0.0.1 and on this machine:
  1. starts `prefect server start` (every service on; SQLite, or a fresh PostgreSQL database);
  2. starts one `docroute worker` on a docroute work pool (before the deploy, as production runs it);
  3. writes 100 client files of 10 integrations each (one document type each), all reading one capture
     inbox and writing to a local folder, and `docroute deploy`s them on that pool: one deployment
     each, a 5-minute interval schedule spread over the interval (deployments/deploy.py), and lets
     the schedules run for --minutes (default 15: three cycles),
     while the integrations of one client get one new document each per cycle (10 per cycle);
     the status report and the confirmations run once at the start, inside the warm-up;
  4. measures the worker's and the server's CPU (process trees, psutil; on PostgreSQL its processes too,
     and the whole machine's busy share beside them) and the worker's memory
     (after a warm-up cycle, and at the end), then reads every run that came due from the server:
     when the worker claimed it (its Pending state) against when it was due.
Writes bench/results/scale.json (one entry per database) with the issue's fields and targets:
  >= 99 % of due polls claimed within 30 s; worker + server + its database <= 50 % of the machine; worker memory
  at the end within 10 % of after warm-up; every document delivered once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (REPO, RESULTS, docroute_env, machine, machine_busy, postgres_cpu, print_table, tree_cpu, tree_rss_mb,  # noqa: E402
                      use_prefect_server, verdict)  # noqa: E402

TYPES = [f"t{i}" for i in range(10)]
ENV_FILE = REPO / "docs" / "deployment" / "docroute.env"


def server_settings() -> dict[str, str]:
    """The Prefect server settings docs/deployment/docroute.env recommends for many deployments (the
    scheduler's horizon, retention): the benchmark's server runs with them, so they cannot drift apart."""
    out = {}
    for line in ENV_FILE.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith(("PREFECT_SERVER_SERVICES_SCHEDULER_", "PREFECT_SERVER_SERVICES_DB_VACUUM_")):
            out[key] = value
    return out
POOL = "scale-bench"


def write_config(cfg: Path, inbox_ref: str, out_ref: str, clients: int, interval_s: int) -> list[str]:
    (cfg / "clients").mkdir(parents=True, exist_ok=True)
    (cfg / "templates").mkdir(exist_ok=True)
    (cfg / "lookups").mkdir(exist_ok=True)
    keys = []
    for c in range(clients):
        client = f"c{c:03d}"
        lines = [f"client: {client}", "integrations:"]
        for t in TYPES:
            lines += [
                f"  - name: {t}",
                f"    source: {inbox_ref}",
                f"    connection: {out_ref}",
                '    activated_at: "2026-01-01T00:00:00Z"',
                f"    filters: {{document_types: [{t}]}}",
                '    mapping: {folder: "{client}/{doc_type}", filename: "{doc_id}.{ext}"}',
                f"    schedule: {{interval: {interval_s}s}}",
                "    lookback: 1h",
            ]
            keys.append(f"{client}/{t}")
        (cfg / "clients" / f"{client}.yaml").write_text("\n".join(lines) + "\n")
    return keys


def claimed_times(run_ids: list) -> dict:
    """flow run id -> when it left Scheduled (the worker's claim: Pending), from each run's state history."""
    from prefect.client.orchestration import get_client

    out = {}
    with get_client(sync_client=True) as client:
        for run_id in run_ids:
            states = client.read_flow_run_states(run_id)
            pending = [s.timestamp for s in states if s.type.value == "PENDING"]
            if pending:
                out[run_id] = min(pending)
    return out


def due_runs(deployment_ids: list, start: datetime, end: datetime) -> list:
    """Runs of these deployments that came due in [start, end]."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterExpectedStartTime

    runs = []
    with get_client(sync_client=True) as client:
        for i in range(0, len(deployment_ids), 100):
            offset = 0
            while True:
                page = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids[i:i + 100])),
                    flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=start, before_=end)),
                    limit=200, offset=offset,
                )
                runs += page
                if len(page) < 200:
                    break
                offset += 200
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--integrations", type=int, default=1000, help="integrations (a multiple of 10; default 1000)")
    parser.add_argument("--interval", type=int, default=300, help="every integration's interval in seconds (default 300)")
    parser.add_argument("--minutes", type=float, default=15.0, help="how long the schedules run (default 15: three cycles)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the memory and CPU baseline (default: one interval)")
    parser.add_argument("--threads", type=int, default=8, help="the worker's threads (default 8)")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite", help="the Prefect server's database")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="docroute-scale-"))
    clients = max(1, args.integrations // len(TYPES))
    database_url = None
    if args.database == "postgresql":
        import psycopg2

        name = f"prefect_scale_{os.getpid()}"
        admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
        admin.autocommit = True
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        database_url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    server = use_prefect_server(work, reuse=False, database_url=database_url, extra_env=server_settings())
    env = docroute_env(work, server.api)
    worker = None
    result: dict = {"database": args.database, "integrations": clients * len(TYPES), "interval_s": args.interval, "machine": machine()}
    try:
        from blocks.capture_inbox import CaptureInboxFolder
        from blocks.local_folder import LocalFolderConnection
        from deployments.config import load_config
        from deployments.deploy import CONFIRM_DEPLOYMENT, CONFIRM_FLOW, STATUS_DEPLOYMENT, STATUS_FLOW, apply_deployments, ensure_work_pool
        from tasks.ledger import Ledger
        from tasks.registry import register_block_types
        from tasks.sources.seed import write_document

        register_block_types()
        inbox, out = work / "inbox", work / "out"
        inbox.mkdir()
        out.mkdir()
        CaptureInboxFolder(path=str(inbox), settle_seconds=1).save("scale-inbox", overwrite=True)
        LocalFolderConnection(base_folder=str(out)).save("scale-out", overwrite=True)
        keys = write_config(work / "cfg", "capture-inbox-folder/scale-inbox", "local-folder-connection/scale-out", clients, args.interval)
        # The worker runs before the integrations are deployed, as in production (workers are always on,
        # ops deploy into a running pool). Started after the deploy, it met the ~700 runs that came due
        # during the 3-minute deploy as one backlog, and took 5 minutes to catch up.
        ensure_work_pool(POOL)  # one creator: the worker would create it too, racing the deploy
        log = (work / "worker.log").open("w")
        worker = subprocess.Popen([sys.executable, "-m", "flows.cli", "worker", "--pool", POOL, "--name", "scale-worker",
                                   "--threads", str(args.threads)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        t = time.monotonic()
        names = apply_deployments(load_config(), work_pool=POOL)
        print(f"deployed {len(keys)} integrations in {time.monotonic() - t:.0f}s on work pool {POOL}")

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment_ids = [client.read_deployment_by_name(n).id for n in names if n.startswith("docroute-sync/")]
        # The warm-up includes one run of each scheduled service flow (the status report of every
        # integration, the confirmations): a worker's first status report loads about 23 MB once, and
        # its schedule (every 15 minutes from the deploy) would otherwise put it in the middle of the
        # measurement (docs/benchmarks.md). Their scheduled runs later in the measurement stay in it.
        from prefect.deployments import run_deployment

        for service in (f"{STATUS_FLOW}/{STATUS_DEPLOYMENT}", f"{CONFIRM_FLOW}/{CONFIRM_DEPLOYMENT}"):
            run_deployment(service, timeout=0)
        start = datetime.now(timezone.utc)
        busy = [f"c000/{t}" for t in TYPES]  # one client's ten integrations get a document every cycle
        expected: list[str] = []

        def add_documents(cycle: int) -> None:
            now = datetime.now(timezone.utc)
            for t in TYPES:
                doc_id = f"c000-{t}-{cycle}"
                write_document(inbox, doc_id, client="c000", doc_type=t, approved_at=now - timedelta(seconds=5))
                expected.append(doc_id)

        warmup = args.warmup if args.warmup is not None else args.interval
        duration = args.minutes * 60
        cycles = max(1, int(duration // args.interval))
        add_documents(0)
        baseline = None
        warm = start
        t0 = time.monotonic()
        next_cycle = 1
        rss_series: list[list[float]] = []  # [minute, MB] once a minute: a leak climbs, fragmentation levels off
        while time.monotonic() - t0 < duration:
            elapsed = time.monotonic() - t0
            if elapsed >= 60 * len(rss_series):
                rss_series.append([len(rss_series), round(tree_rss_mb(worker.pid), 1)])
            if baseline is None and elapsed >= warmup:
                warm = datetime.now(timezone.utc)
                baseline = (time.monotonic(), tree_cpu(worker.pid), tree_cpu(server.pid), tree_rss_mb(worker.pid), postgres_cpu(),
                            machine_busy())
                print(f"after warm-up ({elapsed:.0f}s): worker {baseline[3]:.0f} MB")
            if next_cycle < cycles and elapsed >= next_cycle * args.interval:
                add_documents(next_cycle)
                next_cycle += 1
            if worker.poll() is not None:
                raise RuntimeError(f"the worker stopped; see {work / 'worker.log'}")
            time.sleep(1)
        end = datetime.now(timezone.utc)
        t1, w1, s1, rss_end = time.monotonic(), tree_cpu(worker.pid), tree_cpu(server.pid), tree_rss_mb(worker.pid)
        pg1, (busy1, all1) = postgres_cpu(), machine_busy()
        if baseline is None:
            baseline = (t0, float("nan"), float("nan"), float("nan"), float("nan"), (float("nan"), float("nan")))
        span = t1 - baseline[0]
        cores = os.cpu_count() or 2
        result.update(
            duration_s=round(duration),
            cpu_fraction_worker=round((w1 - baseline[1]) / span / cores, 3),
            cpu_fraction_server=round((s1 - baseline[2]) / span / cores, 3),
            # the server's database: on SQLite inside the server's process; on PostgreSQL its processes on this machine
            cpu_fraction_database=round((pg1 - baseline[4]) / span / cores, 3) if args.database == "postgresql" else 0.0,
            cpu_fraction_machine=round((busy1 - baseline[5][0]) / (all1 - baseline[5][1]), 3),  # everything, this script too
            worker_rss_start_mb=round(baseline[3], 1),
            worker_rss_end_mb=round(rss_end, 1),
            worker_rss_series_mb=rss_series + [[round(duration / 60, 1), round(rss_end, 1)]],
        )
        time.sleep(40)  # let the last due runs be claimed before reading them
        due = [r for r in due_runs(deployment_ids, start, end - timedelta(seconds=30))]
        claims = claimed_times([r.id for r in due])
        late = {r.id: (claims[r.id] - r.expected_start_time).total_seconds() if r.id in claims else float("inf") for r in due}
        lateness = sorted(late.values())
        within = sum(1 for x in lateness if x <= 30)
        steady = [late[r.id] for r in due if r.expected_start_time >= warm]  # due after the warm-up: the steady state
        p99 = lateness[min(len(lateness) - 1, int(len(lateness) * 0.99))] if lateness else float("nan")
        ledger = Ledger(env["DOCROUTE_LEDGER_URL"])
        counts: dict[str, int] = {}
        for key in busy:
            for e in ledger.events_of(key):
                if e["event"] in ("delivered", "already-present"):
                    counts[e["doc_id"]] = counts.get(e["doc_id"], 0) + 1
        ledger.dispose()
        delivered_files = {p.stem for p in out.rglob("*.pdf")}
        states: dict[str, int] = {}
        for r in due:
            states[r.state.name if r.state else "?"] = states.get(r.state.name if r.state else "?", 0) + 1
        result.update(
            polls_due=len(due),
            polls_started_within_30s=within,
            share_started_within_30s=round(within / len(due), 4) if due else None,
            share_started_within_30s_after_warmup=round(sum(1 for x in steady if x <= 30) / len(steady), 4) if steady else None,
            p99_lateness_s=round(p99, 1) if p99 != float("inf") else None,
            median_lateness_s=round(statistics.median(lateness), 1) if lateness and lateness[len(lateness) // 2] != float("inf") else None,
            states=states,
            documents_expected=len(expected),
            documents_delivered=len(set(expected) & delivered_files),
            duplicates=sum(n - 1 for n in counts.values() if n > 1),
        )
        targets = {
            "started_within_30s_ge_99pct": (result["share_started_within_30s"] or 0) >= 0.99,
            "worker_plus_server_le_50pct": result["cpu_fraction_worker"] + result["cpu_fraction_server"] + result["cpu_fraction_database"] <= 0.5,
            "worker_memory_flat_10pct": result["worker_rss_end_mb"] <= result["worker_rss_start_mb"] * 1.10,
            "every_document_once": result["documents_delivered"] == result["documents_expected"] and result["duplicates"] == 0,
        }
        result["targets"] = targets
        print("worker RSS by minute (MB):", " ".join(f"{mb:g}" for _, mb in result["worker_rss_series_mb"]))
        print_table(f"scale: {result['integrations']} integrations every {args.interval}s for {args.minutes:g} min ({args.database})", [
            ("polls due", result["polls_due"], ""),
            ("claimed within 30 s", f"{within} ({result['share_started_within_30s']:.2%})" if due else "-", verdict(targets["started_within_30s_ge_99pct"])),
            ("  the same, of polls due after the warm-up", f"{result['share_started_within_30s_after_warmup']:.2%}" if steady else "-", ""),
            ("p99 lateness", f"{result['p99_lateness_s']} s", ""),
            ("CPU worker / server / its database (of the machine)",
             f"{result['cpu_fraction_worker']:.1%} / {result['cpu_fraction_server']:.1%} / {result['cpu_fraction_database']:.1%}",
             verdict(targets["worker_plus_server_le_50pct"])),
            ("  the whole machine, everything on it", f"{result['cpu_fraction_machine']:.1%}", ""),
            ("worker RSS after warm-up / end", f"{result['worker_rss_start_mb']} / {result['worker_rss_end_mb']} MB", verdict(targets["worker_memory_flat_10pct"])),
            ("documents delivered / expected, duplicates", f"{result['documents_delivered']} / {result['documents_expected']}, {result['duplicates']}", verdict(targets["every_document_once"])),
        ], ("what", "figure", "target"))
        path = RESULTS / "scale.json"
        RESULTS.mkdir(parents=True, exist_ok=True)
        merged = json.loads(path.read_text()) if path.exists() else {}
        merged[args.database] = result
        path.write_text(json.dumps(merged, indent=2, default=str))
        print(f"\nwrote {path}")
        return 0 if all(targets.values()) else 1
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGINT)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
            if database_url is not None:  # the server's PostgreSQL database, as the work folder
                admin = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
                admin.autocommit = True
                admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                admin.close()
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
