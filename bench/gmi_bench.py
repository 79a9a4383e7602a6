"""Benchmark: sync runs from the GetMyInvoices fake (tests/fakes/getmyinvoices_api.py) to a local folder.

    python bench/gmi_bench.py                                  # 1,000 x 50 KB unlimited, then 200 at 100 calls / 60 s
    python bench/gmi_bench.py --docs 50 --limited-docs 25 --limit 30   # a smoke run (about 2 minutes)
    python bench/gmi_bench.py --skip-limited

Phase 1 ("unlimited"): one docroute-sync run (the flow, on a Prefect server started here unless
PREFECT_API_URL answers) taking `--docs` approved documents of `--size` bytes from the fake with its
rate limit off and the block's own pacing off: wall time, calls made per document (as the fake
counted them: /account, listing pages, one workflow read and one download per document), and the
peak memory of this process (the fake runs in a child process, so its 50 MB of documents are not
counted): the growth of the peak resident set during the run. Targets: every document delivered,
at most 2.2 calls per document, the run adds < 100 MB (files are decoded into spools while read,
never held whole).

Phase 2 ("limited"): the fake refuses more than `--limit` calls in any 60 s (a sliding window,
429 with Retry-After) and the block paces to the same number (calls_per_minute). One sync run of
`--limited-docs` documents. Targets: no 429 received (and never more than the limit in any 60 s,
as the fake saw the calls arrive), and at least 90 % of the allowed call rate used: the fastest a
client keeping to the limit could have made the run's calls (the first `--limit` at once, the next
`--limit` 60 s later, ...) against how long they took. Results go to bench/results/gmi.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import docroute_env, machine, print_table, use_prefect_server, verdict, write_result  # noqa: E402


def _serve(pipe, per_minute: int | None) -> None:
    """Child process: one GetMyInvoices fake, answering the parent's commands over `pipe`."""
    from tests.fakes.getmyinvoices_api import GetMyInvoicesAPI
    from tasks.sources.seed import pdf_bytes

    fake = GetMyInvoicesAPI(per_minute=per_minute).start()
    pipe.send({"base_url": fake.base_url, "api_key": fake.api_key, "ca_bundle": fake.ca_bundle})
    while True:
        command, *args = pipe.recv()
        if command == "seed":
            n, size = args
            for i in range(n):
                number = f"B-{i:05d}"
                fake.add(data=pdf_bytes(f"invoice {number}", size), filename=f"{number}.pdf",
                         fields={"documentNumber": number, "companyName": "Globex Industrial BV", "grossAmount": "121.00",
                                 "documentDate": "2026-11-20", "currency": "EUR"},
                         approved=True, completed_at=fake.now())
            with fake.lock:
                fake.requests.clear()
                fake.accepted = fake.refused_429 = 0
            pipe.send(n)
        elif command == "stats":
            with fake.lock:
                times = sorted(r.at for r in fake.requests)
                pipe.send({"requests": len(fake.requests), "accepted": fake.accepted, "refused_429": fake.refused_429,
                           "times": times})
        else:
            fake.stop()
            pipe.send("stopped")
            return


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _phase(work: Path, name: str, docs: int, size: int, limit: int | None) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, limit), daemon=True)
    proc.start()
    try:
        info = parent.recv()
        from blocks.getmyinvoices import GetMyInvoicesSource
        from flows.sync import sync

        GetMyInvoicesSource(api_key=info["api_key"], base_url=info["base_url"], ca_bundle=info["ca_bundle"], client=f"bench{name}",
                            calls_per_minute=limit, request_timeout=60).save(f"bench-{name}", overwrite=True)
        clients = work / "cfg" / "clients"
        (clients / f"bench{name}.yaml").write_text(
            f"client: bench{name}\nintegrations:\n  - name: invoices\n    source: getmyinvoices-source/bench-{name}\n"
            f"    connection: local-folder-connection/bench-out\n    activated_at: 2026-01-01T00:00:00Z\n"
            f'    mapping: {{folder: "{name}/{{doc_type}}", filename: "{{number}}.{{ext}}"}}\n'
        )
        parent.send(("seed", docs, size))
        parent.recv()
        before = _peak_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        state = sync(integration=f"bench{name}/invoices", return_state=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        after = _peak_mb()
        parent.send(("stats",))
        stats = parent.recv()
        delivered = len(list((work / "out" / name).rglob("*.pdf")))
        times = stats.pop("times")
        result = {
            "docs": docs, "size": size, "delivered": delivered, "state": state.type.value, "message": state.message or "",
            "wall_s": round(wall, 2), "client_cpu_s": round(cpu, 2), "docs_per_s": round(docs / wall, 1) if wall else None,
            "calls": stats["requests"], "calls_per_doc": round(stats["requests"] / max(docs, 1), 3),
            "refused_429": stats["refused_429"], "peak_rss_mb": round(after, 1), "run_added_mb": round(after - before, 1),
        }
        if limit:
            # The fastest any client keeping to `limit` calls in every 60 s could make these calls (the first
            # `limit` at once, the next `limit` 60 s later, ...), against how long they took: 1.0 = every
            # slot used. Under `limit` calls, no wait was needed: not measurable.
            span = (times[-1] - times[0]) if len(times) > 1 else 0.0
            fastest = ((len(times) - 1) // limit) * 60.0
            busiest = max((sum(1 for u in times if t <= u < t + 60) for t in times), default=0)
            result.update(
                limit_per_60s=limit, calls_span_s=round(span, 1), fastest_possible_s=fastest,
                most_calls_in_any_60s=busiest,
                rate_used=round(fastest / span, 3) if fastest and span else None,
            )
        return result
    finally:
        parent.send(("stop",))
        parent.recv()
        proc.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1000, help="documents of the unlimited run")
    parser.add_argument("--size", type=int, default=50_000, help="bytes per document")
    parser.add_argument("--limited-docs", type=int, default=200, help="documents of the rate-limited run")
    parser.add_argument("--limit", type=int, default=100, help="calls per 60 s in the rate-limited run (fake and block)")
    parser.add_argument("--skip-limited", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="docroute-gmi-bench-"))
    server = use_prefect_server(work)
    try:
        docroute_env(work, server.api)
        (work / "cfg" / "clients").mkdir(parents=True)
        from tasks.settings import get_settings

        get_settings.cache_clear()
        from blocks.local_folder import LocalFolderConnection
        from tasks.registry import register_block_types

        register_block_types()
        LocalFolderConnection(base_folder=str(work / "out")).save("bench-out", overwrite=True)
        results: dict = {"machine": machine(), "unlimited": _phase(work, "unlimited", args.docs, args.size, None)}
        if not args.skip_limited:
            results["limited"] = _phase(work, "limited", args.limited_docs, args.size, args.limit)
    finally:
        server.stop()
    u = results["unlimited"]
    targets = {
        "all delivered": u["delivered"] == u["docs"] and u["state"] == "COMPLETED",
        "calls per document <= 2.2": u["calls_per_doc"] <= 2.2,
        "run adds < 100 MB": u["run_added_mb"] < 100,
    }
    rows = [("unlimited", u["docs"], u["delivered"], f"{u['wall_s']:.1f}", u["docs_per_s"], u["calls_per_doc"], u["refused_429"],
             f"{u['peak_rss_mb']:.0f} (+{u['run_added_mb']:.0f})", "-")]
    if "limited" in results:
        lim = results["limited"]
        rate = lim["rate_used"]
        targets.update({
            "limited: all delivered": lim["delivered"] == lim["docs"] and lim["state"] == "COMPLETED",
            "limited: no 429": lim["refused_429"] == 0 and lim["most_calls_in_any_60s"] <= args.limit,
            "limited: >= 90 % of the allowed rate": rate is not None and rate >= 0.9,
        })
        rows.append(("limited", lim["docs"], lim["delivered"], f"{lim['wall_s']:.1f}", lim["docs_per_s"], lim["calls_per_doc"],
                     lim["refused_429"], f"{lim['peak_rss_mb']:.0f} (+{lim['run_added_mb']:.0f})",
                     f"{rate:.0%}" if rate is not None else f"n/a (under {args.limit} calls)"))
    results["targets"] = {k: verdict(v) for k, v in targets.items()}
    print_table("GetMyInvoices fake -> local folder (one docroute-sync run each)", rows,
                ("run", "docs", "delivered", "wall s", "docs/s", "calls/doc", "429s", "peak MB", "rate used"))
    for k, v in results["targets"].items():
        print(f"  {v:4}  {k}")
    print(f"written to {write_result('gmi', results)}")


if __name__ == "__main__":
    main()
