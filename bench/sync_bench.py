"""Benchmark: one sync run of N documents from a capture inbox to a local folder, then an idle run.

    python bench/sync_bench.py [--docs 1000] [--size 50000]

Runs against a temporary Prefect server (SQLite) started here. Prints wall time, client CPU time
and peak memory (RSS) of the sync run and of an idle run (no new documents), and writes
bench/results/sync.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def measure(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50_000)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from tasks.registry import register_block_types
        from blocks.capture_inbox import CaptureInboxFolder
        from blocks.local_folder import LocalFolderConnection
        from tasks.settings import get_settings
        from tasks.sources.seed import write_document

        register_block_types()
        root = Path(tempfile.mkdtemp(prefix="docroute-bench-"))
        (root / "cfg" / "clients").mkdir(parents=True)
        os.environ.update(
            DOCROUTE_CONFIG_DIR=str(root / "cfg"), DOCROUTE_LEDGER_URL=f"sqlite:///{root}/ledger.db", DOCROUTE_HOME=str(root / "home")
        )
        get_settings.cache_clear()
        CaptureInboxFolder(path=str(root / "inbox"), settle_seconds=0).save("bench-inbox", overwrite=True)
        LocalFolderConnection(base_folder=str(root / "out")).save("bench-out", overwrite=True)
        (root / "cfg/clients/bench.yaml").write_text(
            "client: bench\nintegrations:\n  - name: invoices\n    source: capture-inbox-folder/bench-inbox\n"
            "    connection: local-folder-connection/bench-out\n    activated_at: 2026-01-01T00:00:00Z\n"
            '    mapping: {folder: "{doc_type}/{approved_at:%Y/%m}", filename: "{doc_id}.{ext}", sidecar: true}\n'
        )
        now = datetime.now(timezone.utc)
        for i in range(args.docs):
            write_document(root / "inbox", f"B{i:06d}", client="bench", approved_at=now - timedelta(minutes=5),
                           pdf_size=args.size, metadata={"number": f"N{i}", "supplier": "Globex"})
        from flows.sync import sync

        wall, cpu = measure(lambda: sync(integration="bench/invoices"))
        delivered = len(list((root / "out").rglob("*.pdf")))
        idle_wall, idle_cpu = measure(lambda: sync(integration="bench/invoices"))
        result = {
            "docs": args.docs,
            "size": args.size,
            "delivered": delivered,
            "sync_wall_s": round(wall, 3),
            "sync_client_cpu_s": round(cpu, 3),
            "per_doc_ms": round(1000 * wall / max(args.docs, 1), 3),
            "idle_wall_s": round(idle_wall, 3),
            "idle_client_cpu_s": round(idle_cpu, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sync.json").write_text(json.dumps(result, indent=2))
    for k, v in result.items():
        print(f"{k:20} {v}")


if __name__ == "__main__":
    main()
