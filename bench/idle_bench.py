"""Benchmark: the cost of an idle poll (a scheduled sync run that finds no new documents).

    python bench/idle_bench.py [--integrations 1] [--runs 5] [--inbox-docs 1000] [--schedule SECONDS]

What it does, all on 127.0.0.1:
  1. uses the Prefect server in PREFECT_API_URL if one answers, else starts `prefect server start`
     (SQLite, free port) in a subprocess;
  2. writes a client file with N integrations reading one capture inbox of --inbox-docs documents
     (approved 5 minutes ago, inside every run's lookback window) to a local folder;
  3. serves their deployments exactly as production does (`python -m deployments.deploy`: one
     process, prefect.serve, one spawned subprocess per flow run) and runs one sync of each, which
     delivers the documents; from then on every run is idle;
  4. measures the serving process tree (incl. each run's subprocess) and the server process tree
     with psutil: their CPU while nothing runs (baseline: the runner's polling), then over --runs
     rounds of idle runs (one run per integration per round, triggered like a schedule would:
     a Scheduled run the runner picks up). --schedule S uses real interval schedules (>= 30 s)
     instead and counts everything in the window (polling included) against the runs;
  5. breaks one idle run down in this process: a fresh interpreter's imports, the flow run in
     process, loading the configuration, the inbox scan, the ledger queries, and a cProfile of
     the in-process run grouped by package;
  6. prints the capacity of one 2-core worker at a 5-minute interval under 50% CPU
     (--cores/--utilisation/--interval change the assumption) and writes bench/results/idle.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import docroute_env, REPO, machine, print_table, tree_cpu, tree_rss_mb, use_prefect_server, verdict, write_result  # noqa: E402


def write_config(cfg: Path, client: str, n: int, inbox_block: str, out_block: str, schedule: int | None, lookup_rows: int) -> list[str]:
    lines = [f"client: {client}", "integrations:"]
    if lookup_rows:  # like ACME's invoices-to-erp: a vendor table, read by every run
        (cfg / "lookups").mkdir(parents=True, exist_ok=True)
        rows = "".join(f"S-{i:06d},V-{i:06d},CC-{i % 900 + 100}\n" for i in range(lookup_rows))
        (cfg / "lookups" / "vendors.csv").write_text("supplier_number,vendor_code,cost_center\n" + rows)
    for i in range(1, n + 1):
        lines += [
            f"  - name: idle-{i:02d}",
            f"    source: capture-inbox-folder/{inbox_block}",
            f"    connection: local-folder-connection/{out_block}",
            "    activated_at: 2026-01-01T00:00:00Z",
            "    lookback: 2d",
            '    mapping: {folder: "{doc_type}/{approved_at:%Y/%m}", filename: "{doc_id}.{ext}", sidecar: true}',
        ]
        if lookup_rows:
            lines[-1] = lines[-1][:-1] + (', fields: {vendor_code: {lookup: vendors, key: "{supplier_number}", column: vendor_code}}, '
                                          "lookups: {vendors: {file: vendors.csv, key: supplier_number}}}")
        if schedule:
            lines.append(f"    schedule: {{interval: {schedule}s}}")
    (cfg / "clients").mkdir(parents=True, exist_ok=True)
    (cfg / "clients" / f"{client}.yaml").write_text("\n".join(lines) + "\n")
    return [f"{client}/idle-{i:02d}" for i in range(1, n + 1)]


class RssSampler(threading.Thread):
    """Peak RSS of a process tree, sampled every 0.1 s (catches each run's subprocess)."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop_flag = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            rss = tree_rss_mb(self.pid)
            if rss == rss:  # not NaN
                self.peak = max(self.peak, rss)
            time.sleep(0.1)


async def _trigger_round(names: list[str], timeout: float = 600) -> list:
    """One Scheduled run per deployment, due now; returns them once all are final."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    runs = [await run_deployment(name, timeout=0) for name in names]
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            done = [await client.read_flow_run(r.id) for r in runs]
            if all(r.state and r.state.is_final() for r in done):
                return done
            if time.monotonic() > deadline:
                raise TimeoutError("idle runs did not finish in time")
            await asyncio.sleep(0.2)


async def _finished_runs(deployment_ids: list, after: datetime | None = None) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        runs = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterStateType(any_=[StateType.COMPLETED, StateType.FAILED, StateType.CRASHED])),
        )
    return [r for r in runs if after is None or (r.end_time and r.end_time > after)]


async def _phases(runs: list) -> list[dict]:
    """Per run: poll latency (scheduled -> picked up), process start (pending -> running),
    flow body (running -> completed) and pickup -> end (the run's wall time on the worker)."""
    from prefect.client.orchestration import get_client

    out = []
    async with get_client() as client:
        for r in runs:
            states = {s.type.value: s.timestamp for s in await client.read_flow_run_states(r.id)}
            end = states.get("COMPLETED") or states.get("FAILED") or states.get("CRASHED")
            pend, running = states.get("PENDING"), states.get("RUNNING")
            if not (end and pend and running):
                continue
            out.append(
                {
                    "state": r.state.type.value if r.state else "?",
                    "start_s": (running - pend).total_seconds(),
                    "body_s": (end - running).total_seconds(),
                    "wall_s": (end - pend).total_seconds(),
                    "latency_s": (pend - states["SCHEDULED"]).total_seconds() if "SCHEDULED" in states else None,
                }
            )
    return out


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def measure_served(args, names: list[str], serving_pid: int, server_pid: int | None) -> dict:
    """Runs the idle rounds against the serving process; returns the per-run figures."""
    from flows.demo import _wait_for_deployments

    deployments = asyncio.run(_wait_for_deployments(names, timeout=180))
    ids = [d.id for d in deployments.values()]
    res: dict = {}
    if args.schedule:
        print(f"waiting for the first scheduled run of each integration (interval {args.schedule}s) ...", flush=True)
        deadline = time.monotonic() + 10 * args.schedule + 120
        while True:  # the first run delivers the seeded documents; the second is the warm-up idle run
            done = asyncio.run(_finished_runs(ids))
            per = {d: sum(1 for r in done if r.deployment_id == d) for d in ids}
            if min(per.values()) >= 2:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("scheduled runs did not happen; see serve.log")
            time.sleep(1)
        t0 = datetime.now(timezone.utc)
        c0, s0, w0 = tree_cpu(serving_pid), tree_cpu(server_pid), time.monotonic()
        sampler = RssSampler(serving_pid)
        sampler.start()
        target = args.runs * len(ids)
        print(f"measuring {target} scheduled idle runs ...", flush=True)
        while True:
            runs = asyncio.run(_finished_runs(ids, after=t0))
            if len(runs) >= target:
                break
            if time.monotonic() - w0 > 3 * args.runs * args.schedule + 300:
                raise TimeoutError("scheduled runs stopped; see serve.log")
            time.sleep(0.5)
        c1, s1, elapsed = tree_cpu(serving_pid), tree_cpu(server_pid), time.monotonic() - w0
        sampler.stop_flag.set()
        n = len(runs)
        res.update(mode=f"interval schedules of {args.schedule}s; window CPU (polling included) / runs in the window",
                   baseline_client_cpu_per_s=0.0, baseline_server_cpu_per_s=0.0)
        res["client_cpu_per_run_s"] = (c1 - c0) / n
        res["server_cpu_per_run_s"] = (s1 - s0) / n
    else:
        # the delivering run, then a warm-up idle run (first SQLite reads, first artifacts of the key)
        for label in ("first sync (delivers the inbox)", "warm-up idle run"):
            t = time.monotonic()
            runs = asyncio.run(_trigger_round(names))
            print(f"{label}: {[r.state.name for r in runs]} in {time.monotonic() - t:.1f}s", flush=True)
            bad = [r for r in runs if not r.state.is_completed()]
            if bad:
                raise SystemExit(f"{label} did not complete: {bad[0].state.message}; see serve.log")
        print(f"baseline: {args.baseline}s with nothing to run ...", flush=True)
        c0, s0, w0 = tree_cpu(serving_pid), tree_cpu(server_pid), time.monotonic()
        time.sleep(args.baseline)
        c1, s1, w1 = tree_cpu(serving_pid), tree_cpu(server_pid), time.monotonic()
        res["baseline_client_cpu_per_s"] = (c1 - c0) / (w1 - w0)
        res["baseline_server_cpu_per_s"] = (s1 - s0) / (w1 - w0)
        sampler = RssSampler(serving_pid)
        sampler.start()
        runs = []
        print(f"measuring {args.runs} rounds of {len(names)} idle run(s) ...", flush=True)
        c0, s0, w0 = tree_cpu(serving_pid), tree_cpu(server_pid), time.monotonic()
        for _ in range(args.runs):
            runs += asyncio.run(_trigger_round(names))
        c1, s1, elapsed = tree_cpu(serving_pid), tree_cpu(server_pid), time.monotonic() - w0
        sampler.stop_flag.set()
        n = len(runs)
        res["mode"] = "Scheduled runs due now, picked up by the serving runner; baseline (polling) CPU subtracted"
        res["client_cpu_per_run_s"] = (c1 - c0 - res["baseline_client_cpu_per_s"] * elapsed) / n
        res["server_cpu_per_run_s"] = (s1 - s0 - res["baseline_server_cpu_per_s"] * elapsed) / n
    phases = asyncio.run(_phases(runs))
    res["runs_measured"] = n
    res["run_states"] = sorted({p["state"] for p in phases})
    res["wall_per_run_s"] = _mean([p["wall_s"] for p in phases])
    res["process_start_s"] = _mean([p["start_s"] for p in phases])
    res["flow_body_s"] = _mean([p["body_s"] for p in phases])
    lat = [p["latency_s"] for p in phases if p["latency_s"] is not None]
    res["pickup_latency_s"] = _mean(lat)
    res["serving_tree_peak_rss_mb"] = sampler.peak
    return res


def _child_cpu(cmd: list[str], env: dict) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, check=True, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _cpu_wall(fn, repeat: int = 3) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return _mean(walls), _mean(cpus)


GROUPS = [
    ("docroute code (flows, tasks, deployments, blocks)", ("/work/main/flows", "/work/main/tasks", "/work/main/deployments", "/work/main/blocks")),
    ("prefect", ("/prefect/",)),
    ("HTTP client (httpx, httpcore, h11, ssl, socket)", ("/httpx/", "/httpcore/", "/h11/", "ssl.py", "socket.py", "<method 'recv", "<method 'send")),
    ("pydantic (validation, serialisation)", ("/pydantic", "pydantic_core")),
    ("sqlalchemy + sqlite3", ("/sqlalchemy/", "sqlite3", "<method 'execute' of 'sqlite3")),
    ("json", ("/json/", "json.decoder", "'_json")),
    ("file system (stat, open, glob)", ("pathlib.py", "posix.stat", "<built-in method posix", "<built-in method io.open", "glob.py", "fnmatch")),
    ("anyio / asyncio / threading waits", ("/anyio/", "/asyncio/", "threading.py", "<method 'acquire'", "<built-in method select")),
]


def profile_groups(fn) -> tuple[list[tuple[str, float]], list[str]]:
    """cProfile of fn(): own time grouped by package (main thread only), and the top functions."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    stats = pstats.Stats(prof)
    totals: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        where = f"{filename} {func}"
        group = next((name for name, keys in GROUPS if any(k in where for k in keys)), "other (stdlib, yaml, ...)")
        totals[group] = totals.get(group, 0.0) + tottime
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)
    lines = []
    for (filename, line, func), (_cc, nc, tottime, cumtime, _c) in top:
        if "/work/main/" in filename or "/prefect/" in filename:
            lines.append(f"{cumtime:7.3f}s cum {tottime:7.3f}s own {nc:6d}x {Path(filename).name}:{line} {func}")
        if len(lines) >= 15:
            break
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True), lines


def breakdown(args, key: str, env: dict) -> dict:
    """One idle run taken apart, in this process (the serving process is idle meanwhile)."""
    out: dict = {}
    cmd = [sys.executable, "-c", "import deployments.deploy, flows.sync"]  # what each spawned run imports
    out["fresh_interpreter_imports_cpu_s"] = min(_child_cpu(cmd, env) for _ in range(3))
    out["bare_interpreter_cpu_s"] = min(_child_cpu([sys.executable, "-c", "pass"], env) for _ in range(3))

    from deployments.config import load_config
    from flows.sync import sync
    from tasks import ledger as L
    from tasks.registry import load_block
    from tasks.sources.base import Window

    sync(integration=key)  # warm-up in this process
    out["in_process_run_wall_s"], out["in_process_run_cpu_s"] = _cpu_wall(lambda: sync(integration=key))

    out["config_wall_s"], out["config_cpu_s"] = _cpu_wall(lambda: load_config(only=key))
    config = load_config(only=key)
    integ = config.get(key)
    source = load_block(integ.source).source()
    found: list = []
    window = Window(integ.activated_at, datetime.now(timezone.utc))
    out["inbox_scan_wall_s"], out["inbox_scan_cpu_s"] = _cpu_wall(lambda: found.append(source.scan(integ.client, None, window)))
    ids = [c.doc_id for c in found[-1].candidates]

    def ledger_part() -> None:
        ledger = L.Ledger.from_settings()
        try:
            with ledger.lock(key):
                ledger.cursor(key)
                ledger.rows(key, statuses=L.OPEN_STATUSES + (L.NEEDS_ATTENTION,))
                for i in range(0, len(ids), 500):
                    ledger.rows(key, doc_ids=ids[i : i + 500])
        finally:
            ledger.dispose()

    out["ledger_wall_s"], out["ledger_cpu_s"] = _cpu_wall(ledger_part)
    from tasks.mapping import Lookups

    out["lookups_wall_s"], out["lookups_cpu_s"] = _cpu_wall(lambda: Lookups(config, integ))  # warm: pandas already imported
    out["pandas_import_cpu_s"] = 0.0
    if integ.mapping.lookups:  # a run's fresh process also imports pandas (config check and table read)
        base = [sys.executable, "-c", "import deployments.config, tasks.mapping"]
        with_pandas = [sys.executable, "-c", "import deployments.config, tasks.mapping, pandas"]
        out["pandas_import_cpu_s"] = min(_child_cpu(with_pandas, env) for _ in range(3)) - min(_child_cpu(base, env) for _ in range(3))
    out["inbox_docs_seen"] = len(ids)
    if args.profile:
        groups, top = profile_groups(lambda: sync(integration=key))
        out["profile_groups_s"] = {k: round(v, 4) for k, v in groups}
        out["profile_top"] = top
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send this process's run logs before the server stops
    return out


def _stop(serving: subprocess.Popen | None) -> None:
    if serving is not None and serving.poll() is None:
        os.killpg(serving.pid, signal.SIGINT)  # its own session; the runner stops its loop and exits
        try:
            serving.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
            serving.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--integrations", type=int, default=1, help="integrations served by one process (default 1)")
    parser.add_argument("--runs", type=int, default=5, help="idle runs measured per integration (default 5)")
    parser.add_argument("--inbox-docs", type=int, default=1000, help="documents in the inbox, all already delivered (default 1000)")
    parser.add_argument("--size", type=int, default=50_000, help="PDF size in bytes (default 50000)")
    parser.add_argument("--baseline", type=float, default=30.0, help="seconds of CPU baseline with nothing to run (default 30)")
    parser.add_argument("--schedule", type=int, default=None, help="use real interval schedules of this many seconds (>= 30)")
    parser.add_argument("--lookup-rows", type=int, default=0, help="give each integration a lookup table of this many rows")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the cProfile breakdown")
    parser.add_argument("--cores", type=float, default=2.0, help="worker cores for the capacity estimate (default 2)")
    parser.add_argument("--utilisation", type=float, default=0.5, help="share of the worker's CPU to use (default 0.5)")
    parser.add_argument("--interval", type=float, default=300.0, help="each integration's interval in seconds (default 300)")
    parser.add_argument("--target-integrations", type=int, default=100,
                        help="capacity to reach, server elsewhere (default 100; the issue asks for the figure, sets no target)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, ledger)")
    args = parser.parse_args()
    if args.schedule is not None and args.schedule < 30:
        parser.error("--schedule must be at least 30 (docroute's minimum interval)")

    work = Path(tempfile.mkdtemp(prefix="docroute-idle-bench-"))
    server = use_prefect_server(work)
    print(f"Prefect server: {server.api} ({'started here' if server.proc else 'existing'}; server pid {server.pid})", flush=True)
    tag = secrets.token_hex(3)
    client = f"idlebench{tag}"
    env = docroute_env(work, server.api)
    serving = None
    result: dict = {"args": vars(args), "machine": machine(), "server": "started here (SQLite)" if server.proc else server.api}
    try:
        from tasks.registry import register_block_types
        from blocks.capture_inbox import CaptureInboxFolder
        from blocks.local_folder import LocalFolderConnection
        from deployments.deploy import FLOW_NAME
        from flows.demo import serve_deployments
        from tasks.sources.seed import write_document

        register_block_types()
        CaptureInboxFolder(path=str(work / "inbox"), settle_seconds=0).save(f"{client}-inbox", overwrite=True)
        LocalFolderConnection(base_folder=str(work / "out")).save(f"{client}-out", overwrite=True)
        keys = write_config(work / "cfg", client, args.integrations, f"{client}-inbox", f"{client}-out", args.schedule, args.lookup_rows)
        now = datetime.now(timezone.utc)
        for i in range(args.inbox_docs):
            write_document(work / "inbox", f"IDLE{i:06d}", client=client, approved_at=now - timedelta(minutes=5),
                           pdf_size=args.size, metadata={"number": f"N{i}", "supplier": "Globex", "supplier_number": f"S-{i % max(args.lookup_rows, 1):06d}"})
        names = [f"{FLOW_NAME}/{k.replace('/', '-')}" for k in keys]
        serving = serve_deployments(work / "serve.log", env)
        served = measure_served(args, names, serving.pid, server.pid)
        result["served"] = served
        delivered = sum(1 for p in (work / "out").rglob("*.pdf"))
        result["delivered_by_first_sync"] = delivered
        _stop(serving)  # nothing else runs while one run is taken apart
        print("breaking one idle run down in this process ...", flush=True)
        parts = breakdown(args, keys[0], env)
        result["breakdown"] = parts
    finally:
        _stop(serving)
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    s, b = result["served"], result["breakdown"]
    budget = args.cores * args.utilisation * args.interval
    fixed_client = s["baseline_client_cpu_per_s"] * args.interval
    fixed_server = s["baseline_server_cpu_per_s"] * args.interval
    per_client, per_server = s["client_cpu_per_run_s"], s["server_cpu_per_run_s"]
    cap_worker = int((budget - fixed_client) // per_client) if per_client > 0 else None
    both = per_client + (per_server if per_server == per_server else 0.0)
    cap_shared = int((budget - fixed_client - (fixed_server if fixed_server == fixed_server else 0)) // both) if both > 0 else None
    concurrent = (cap_worker or 0) * s["wall_per_run_s"] / args.interval
    result["capacity"] = {
        "assumption": f"{args.cores:g} cores, at most {args.utilisation:.0%} busy, every integration every {args.interval:g}s",
        "cpu_budget_per_interval_s": budget,
        "integrations_per_worker_server_elsewhere": cap_worker,
        "integrations_per_worker_server_on_same_machine": cap_shared,
        "average_concurrent_runs_at_that_load": round(concurrent, 2),
    }
    imports = b["fresh_interpreter_imports_cpu_s"]
    flow_other = b["in_process_run_cpu_s"] - b["config_cpu_s"] - b["inbox_scan_cpu_s"] - b["ledger_cpu_s"] - b["lookups_cpu_s"]
    spawn_rest = per_client - b["in_process_run_cpu_s"]
    result["limit"] = (
        f"the run's own process: every run is a freshly spawned Python process that imports Prefect and docroute "
        f"(a fresh interpreter's imports alone: {imports:.2f} CPU-s); the whole served run costs {per_client:.2f} CPU-s on the "
        f"worker, the flow run itself only {b['in_process_run_cpu_s']:.2f} CPU-s when measured in process (inbox scan of "
        f"{b['inbox_docs_seen']} documents {b['inbox_scan_cpu_s']:.3f}, ledger {b['ledger_cpu_s']:.3f}, configuration "
        f"{b['config_cpu_s']:.3f}, the rest Prefect's engine and API calls); the server adds {per_server:.2f} CPU-s per run"
    )
    result["targets"] = {
        "every idle run Completed": s["run_states"] == ["COMPLETED"],
        f"one worker carries >= {args.target_integrations} integrations (server elsewhere)": (cap_worker or 0) >= args.target_integrations,
    }
    path = write_result("idle", result)

    n = s["runs_measured"]
    print_table(
        f"Idle poll: {n} idle runs of {args.integrations} integration(s), inbox of {args.inbox_docs} delivered documents ({s['mode']})",
        [
            ("wall per run, pickup -> end (s)", f"{s['wall_per_run_s']:.2f}"),
            ("  process start + imports, pending -> running (s)", f"{s['process_start_s']:.2f}"),
            ("  flow body, running -> completed (s)", f"{s['flow_body_s']:.2f}"),
            ("  poll latency, scheduled -> picked up (s, not a cost)", f"{s['pickup_latency_s']:.2f}"),
            ("client CPU per run, serving process + run subprocess (CPU-s)", f"{per_client:.2f}"),
            ("server CPU per run, Prefect server tree (CPU-s)", f"{per_server:.2f}"),
            ("client baseline, runner polling (CPU-s per 5 min)", f"{s['baseline_client_cpu_per_s'] * 300:.2f}"),
            ("server baseline, services (CPU-s per 5 min)", f"{s['baseline_server_cpu_per_s'] * 300:.2f}"),
            ("serving tree peak RSS during the runs (MB)", f"{s['serving_tree_peak_rss_mb']:.0f}"),
        ],
        ("measure", "value"),
    )
    print_table(
        "Where an idle run's client CPU goes (CPU-s; in-process figures are this process, warm)",
        [
            ("fresh interpreter: import deployments.deploy + flows.sync", f"{imports:.2f}"),
            ("  of which a bare interpreter", f"{b['bare_interpreter_cpu_s']:.2f}"),
            ("flow run in process (sync(), warm)", f"{b['in_process_run_cpu_s']:.2f}"),
            ("  load + validate configuration (incl. block reads)", f"{b['config_cpu_s']:.3f}"),
            (f"  inbox scan ({b['inbox_docs_seen']} documents' JSON)", f"{b['inbox_scan_cpu_s']:.3f}"),
            ("  ledger (lock, cursor, open rows, known rows)", f"{b['ledger_cpu_s']:.3f}"),
            (f"  lookup tables ({args.lookup_rows} rows; warm, pandas already imported)", f"{b['lookups_cpu_s']:.3f}"),
            ("  import pandas, paid by every run of an integration with lookups", f"{b['pandas_import_cpu_s']:.2f}"),
            ("  the rest: Prefect engine, task runs, API calls, artifacts, logs", f"{flow_other:.2f}"),
            ("served run minus in-process run (spawn, imports, unpickling, engine start)", f"{spawn_rest:.2f}"),
        ],
        ("part", "CPU-s"),
    )
    from prefect.settings import get_current_settings

    beat = get_current_settings().flows.heartbeat_frequency
    print(f"  heartbeats: every {beat} s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY), one event to the server at a run's start and"
          " then per interval; the run does not wait for the heartbeat thread at its end (flows/engine.py)" if beat else
          "  heartbeats: off (PREFECT_FLOWS_HEARTBEAT_FREQUENCY unset)")
    if "profile_groups_s" in b:
        print_table("cProfile of one in-process idle run: main thread's own wall time by package "
                    "(waits = blocked on Prefect API calls made from its event-loop thread)",
                    [(k, f"{v:.3f}") for k, v in b["profile_groups_s"].items()], ("package", "s"))
        print("  top functions by cumulative time:")
        for line in b["profile_top"]:
            print("   ", line)
    c = result["capacity"]
    print_table(
        f"Capacity of one worker ({c['assumption']})",
        [
            ("integrations per worker, Prefect server on another machine", c["integrations_per_worker_server_elsewhere"]),
            ("integrations per worker, Prefect server on the same 2 cores", c["integrations_per_worker_server_on_same_machine"]),
            ("average concurrent runs at that load", c["average_concurrent_runs_at_that_load"]),
        ],
        ("", "value"),
    )
    print_table("Targets", [(k, verdict(v)) for k, v in result["targets"].items()], ("target", ""))
    print(f"\nWhat limits the idle poll: {result['limit']}.")
    print(f"Figures are noisy on a shared machine (load at start {result['machine']['load_avg_1m_at_start']}). Written to {path}")


if __name__ == "__main__":
    main()
