"""Benchmark: a backfill of many documents to a real local OpenSSH sshd through the SFTP connector.

    python bench/backfill_bench.py [--docs 10000] [--size 50000] [--big 1000x1000000,200x5000000] [--via sync|backfill]

Needs root (tests/sshd.py starts sshd with a dedicated test account). Uses the Prefect server in
PREFECT_API_URL if one answers, else starts `prefect server start` (SQLite) on a free port.

Scenarios, each in a fresh Python process (so its peak RSS is its own), each with its own inbox:
  main     --docs documents of --size bytes, approved over the last 30 days;
  count    a tenth of --docs, same size: memory must not grow with the number of documents;
  big      each COUNTxBYTES of --big: memory must not grow with the documents' size.
Each scenario is one backfill run: the `docroute-sync` flow with since/until (the last 31 days),
or with --via backfill the `docroute-backfill` flow (flows/backfill.py) over the same range in
--chunk chunks (one sync subflow each).
Measured: wall time of the run (process start and imports excluded, reported apart), the
process's peak RSS (ru_maxrss) and, with --tracemalloc, Python's peak allocations (slower).
Every document must arrive (files counted on the server) and be `delivered` in the ledger.
Targets: main in < 60 s and < 500 MB peak RSS; peak RSS flat (within --flat-mb) across scenarios.
Writes bench/results/backfill.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import docroute_env, REPO, machine, print_table, use_prefect_server, verdict, write_result  # noqa: E402

TARGET_WALL_S = 60.0
TARGET_RSS_MB = 500.0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(spec: dict) -> None:
    """One scenario's run, in this (fresh) process; prints a JSON line with the figures."""
    t_start = time.perf_counter()
    import tracemalloc

    from tasks.settings import get_settings

    get_settings.cache_clear()
    since = datetime.fromisoformat(spec["since"])
    until = datetime.fromisoformat(spec["until"])
    if spec["via"] == "backfill":
        from flows.backfill import backfill as run_flow

        call = lambda: run_flow(integration=spec["integration"], since=since, until=until, chunk=spec["chunk"])  # noqa: E731
    else:
        from flows.sync import sync as run_flow

        call = lambda: run_flow(integration=spec["integration"], since=since, until=until)  # noqa: E731
    import_s = time.perf_counter() - t_start
    rss_after_imports = _rss_mb()
    if spec["tracemalloc"]:
        tracemalloc.start()
    prof = None
    if spec.get("profile"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    error = None
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - reported, the parent decides
        error = f"{type(exc).__name__}: {str(exc)[:500]}"
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof is not None:
        import io
        import pstats

        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
        Path(spec["profile"]).write_text(text.getvalue())
    peak_py = tracemalloc.get_traced_memory()[1] / 2**20 if spec["tracemalloc"] else None
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    print("RESULT " + json.dumps({
        "wall_s": wall, "cpu_s": cpu, "import_s": import_s, "rss_after_imports_mb": rss_after_imports,
        "peak_rss_mb": _rss_mb(), "tracemalloc_peak_mb": peak_py, "error": error,
    }), flush=True)


def seed(inbox: Path, prefix: str, client: str, n: int, size: int, now: datetime) -> None:
    from tasks.sources.seed import pdf_bytes, write_document

    for i in range(n):
        # up to 100 KB: the seed module's PDF (random padding); above: a shared random body with the
        # document's number in front (10,000 fresh random bodies would cost more than the run itself)
        pdf = pdf_bytes(f"invoice {prefix}{i:06d}", size) if size <= 100_000 else _big_body(size, i)
        write_document(
            inbox, f"{prefix}{i:06d}", client=client,
            approved_at=now - timedelta(days=i % 30, minutes=5 + i % 600),
            pdf=pdf,
            metadata={"number": f"{prefix}-{i}", "supplier": "Globex Industrial BV", "supplier_number": "S-1001", "total": "121.00"},
        )


_BIG: dict[int, bytes] = {}


def _big_body(size: int, i: int) -> bytes:
    """A PDF of `size` bytes: a shared random block plus the document number, so each differs."""
    if size not in _BIG:
        _BIG[size] = os.urandom(size)
    head = b"%PDF-1.4\n%" + f"{i:012d}".encode() + b"\n"
    return head + _BIG[size][len(head):]


def count_files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.pdf") if not p.name.startswith("."))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--docs", type=int, default=10_000, help="documents in the main scenario (default 10000)")
    parser.add_argument("--size", type=int, default=50_000, help="bytes per document in the main scenario (default 50000)")
    parser.add_argument("--big", default="1000x1000000,200x5000000", help="COUNTxBYTES,... bigger documents ('' for none)")
    parser.add_argument("--no-count", dest="count", action="store_false", help="skip the tenth-of-the-documents scenario")
    parser.add_argument("--via", choices=["sync", "backfill"], default="sync", help="sync flow with since/until, or the backfill flow")
    parser.add_argument("--chunk", default="1d", help="with --via backfill: the chunk size (default 1d: 32 sync runs)")
    parser.add_argument("--sidecar", action="store_true", help="also write a JSON sidecar per document (two files each)")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure Python's peak allocations (slows the run)")
    parser.add_argument("--flat-mb", type=float, default=64.0, help="peak RSS may differ by at most this across scenarios (default 64)")
    parser.add_argument("--profile", action="store_true", help="cProfile each run (main thread, slower); top functions printed")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(json.loads(args.child))
    if args.via == "backfill" and not (REPO / "flows" / "backfill.py").exists():
        parser.error("--via backfill needs flows/backfill.py (the docroute-backfill flow), which is not here")

    from tests.sshd import start_sshd

    work = Path(tempfile.mkdtemp(prefix="docroute-backfill-bench-"))
    work.chmod(0o755)
    sshd = start_sshd(work / "sshd")
    server = use_prefect_server(work)
    print(f"Prefect server: {server.api} ({'started here' if server.proc else 'existing'}); sshd on port {sshd.port}", flush=True)
    env = docroute_env(work, server.api)
    scenarios = [("main", args.docs, args.size)]
    if args.count and args.docs >= 10:
        scenarios.append(("count", args.docs // 10, args.size))
    for part in filter(None, args.big.split(",")):
        n, size = part.lower().split("x")
        scenarios.append((f"big-{n}x{int(size) // 1000}KB", int(n), int(size)))
    result: dict = {"args": vars(args), "machine": machine(), "sshd": "OpenSSH on 127.0.0.1", "scenarios": []}
    try:
        from tasks.registry import register_block_types
        from blocks.capture_inbox import CaptureInboxFolder
        from blocks.sftp import SftpConnection
        from tasks.ledger import Ledger

        register_block_types()
        tag = os.urandom(3).hex()
        client = f"backfill{tag}"
        dest_root = sshd.mkdir("export")
        SftpConnection(
            host=sshd.host, port=sshd.port, username=sshd.user, password=sshd.password,
            host_key=sshd.known_hosts_line, base_folder=str(dest_root),
        ).save(f"{client}-sftp", overwrite=True)
        lines = [f"client: {client}", "integrations:"]
        for label, _, _ in scenarios:
            lines += [
                f"  - name: {label.lower()}",
                f"    source: capture-inbox-folder/{client}-{label.lower()}",
                f"    connection: sftp-connection/{client}-sftp",
                "    activated_at: 2026-01-01T00:00:00Z",
                f'    mapping: {{folder: "{label.lower()}/{{doc_type}}/{{approved_at:%Y/%m}}", filename: "{{doc_id}}.{{ext}}", sidecar: {str(args.sidecar).lower()}}}',
            ]
        (work / "cfg" / "clients").mkdir(parents=True)
        (work / "cfg" / "clients" / f"{client}.yaml").write_text("\n".join(lines) + "\n")
        for label, n, size in scenarios:
            inbox = work / f"inbox-{label}"
            CaptureInboxFolder(path=str(inbox), settle_seconds=0).save(f"{client}-{label.lower()}", overwrite=True)
            now = datetime.now(timezone.utc)
            t = time.perf_counter()
            seed(inbox, f"D{label[:1].upper()}", client, n, size, now)
            print(f"{label}: seeded {n} x {size} bytes in {time.perf_counter() - t:.1f}s; running the backfill ...", flush=True)
            key = f"{client}/{label.lower()}"
            spec = {"integration": key, "since": (now - timedelta(days=31)).isoformat(), "until": now.isoformat(),
                    "via": args.via, "chunk": args.chunk, "tracemalloc": args.tracemalloc,
                    "profile": str(work / f"profile-{label}.txt") if args.profile else None}
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, cwd=REPO,
                                  capture_output=True, text=True)
            process_s = time.perf_counter() - t
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{label}: the run's process failed:\n{proc.stderr[-3000:]}")
            figures = json.loads(line[len("RESULT "):])
            ledger = Ledger.from_settings()
            counts = ledger.counts(key)
            ledger.dispose()
            arrived = count_files(dest_root / label.lower())
            row = {"scenario": label, "docs": n, "size_bytes": size, "process_s": process_s, **figures,
                   "arrived": arrived, "ledger": counts, "docs_per_s": n / figures["wall_s"],
                   "mb_per_s": n * size / figures["wall_s"] / 1e6}
            row["complete"] = arrived == n and counts.get("delivered", 0) == n and figures["error"] is None
            result["scenarios"].append(row)
            print(f"{label}: {figures['wall_s']:.1f}s, peak RSS {figures['peak_rss_mb']:.0f} MB, {arrived}/{n} arrived, "
                  f"ledger {counts}{', error: ' + figures['error'] if figures['error'] else ''}", flush=True)
            if args.profile:
                print((work / f"profile-{label}.txt").read_text()[:6000], flush=True)
            shutil.rmtree(inbox, ignore_errors=True)  # disk: the next scenario writes up to 1 GB
            shutil.rmtree(dest_root / label.lower(), ignore_errors=True)
    finally:
        server.stop()
        sshd.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    rows = result["scenarios"]
    main_row = rows[0]
    peaks = [r["peak_rss_mb"] for r in rows]
    spread = max(peaks) - min(peaks)
    targets = {
        f"main: {main_row['docs']} docs in < {TARGET_WALL_S:g} s": main_row["wall_s"] < TARGET_WALL_S,
        f"main: peak RSS < {TARGET_RSS_MB:g} MB": main_row["peak_rss_mb"] < TARGET_RSS_MB,
        f"peak RSS flat across scenarios (spread < {args.flat_mb:g} MB)": spread < args.flat_mb if len(rows) > 1 else None,
        "every document arrived and is delivered in the ledger": all(r["complete"] for r in rows),
    }
    result["rss_spread_mb"] = spread
    # growth with the number of documents (same size) and with their size (same number)
    count_row = next((r for r in rows if r["scenario"] == "count"), None)
    if count_row and main_row["docs"] > count_row["docs"]:
        slope = (main_row["peak_rss_mb"] - count_row["peak_rss_mb"]) / (main_row["docs"] - count_row["docs"]) * 1000
        result["rss_mb_per_1000_docs"] = slope
    big_rows = [r for r in rows if r["scenario"].startswith("big")]
    if big_rows:
        small = min(rows, key=lambda r: r["size_bytes"] * 1e9 + r["docs"])  # the smallest documents, fewest of them
        result["rss_growth_with_size_mb"] = max(r["peak_rss_mb"] for r in big_rows) - small["peak_rss_mb"]
    result["targets"] = {k: v for k, v in targets.items()}
    path = write_result("backfill", result)
    via = "docroute-backfill flow" if args.via == "backfill" else "docroute-sync flow with since/until"
    print_table(
        f"Backfill to OpenSSH sshd on 127.0.0.1 through the SFTP connector ({via}; one fresh process per scenario)",
        [
            (r["scenario"], r["docs"], f"{r['size_bytes'] / 1000:g} KB", f"{r['wall_s']:.1f}", f"{r['docs_per_s']:.0f}", f"{r['mb_per_s']:.1f}",
             f"{r['cpu_s']:.1f}", f"{r['rss_after_imports_mb']:.0f}", f"{r['peak_rss_mb']:.0f}",
             "-" if r["tracemalloc_peak_mb"] is None else f"{r['tracemalloc_peak_mb']:.0f}", f"{r['import_s']:.1f}",
             f"{r['arrived']}/{r['docs']}")
            for r in rows
        ],
        ("scenario", "docs", "size", "wall s", "docs/s", "MB/s", "CPU s", "RSS imports MB", "peak RSS MB", "tracemalloc MB", "imports s", "arrived"),
    )
    print_table("Targets", [(k, verdict(v)) for k, v in targets.items()], ("target", ""))
    if "rss_mb_per_1000_docs" in result:
        print(f"\nPeak RSS grows {result['rss_mb_per_1000_docs']:.1f} MB per 1,000 documents in one run (per-document metadata, "
              f"ledger rows and report rows held until the run's report)", end="")
    if "rss_growth_with_size_mb" in result:
        print(f"; with {max(r['size_bytes'] for r in big_rows) / 1e6:g} MB documents instead of {small['size_bytes'] / 1e3:g} KB "
              f"it grows {result['rss_growth_with_size_mb']:.0f} MB (files are streamed, never held whole).", end="")
    print(f"\nWall = the flow run alone (this process's imports and start excluded, shown apart). Peak RSS = the whole "
          f"process (ru_maxrss), the Prefect server and sshd not included. Figures are noisy on a shared machine "
          f"(load at start {result['machine']['load_avg_1m_at_start']}). Written to {path}")


if __name__ == "__main__":
    main()
