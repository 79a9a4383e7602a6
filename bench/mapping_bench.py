"""Benchmark: mapping throughput (tasks/mapping.py map_document) with a large lookup table.

    python bench/mapping_bench.py [--rows 10000] [--docs 10000] [--target 2000]

Writes a lookup CSV of --rows suppliers (supplier_number, vendor_code, cost_center, name, vat,
iban) under a temporary config folder and an integration like ACME's invoices-to-erp: two
lookups per document (with defaults), template fields, a constant, a folder with a date
format, a renamed file, a sidecar and sanitising (ASCII, allowed characters, max length).
Documents are in memory (their files are never read by the mapping), suppliers spread over the
whole table, one in 50 missing from it (the default applies).

Measured, no Prefect server needed:
  cold   in a fresh Python process: import of the mapping code, loading the table
         (Lookups: import pandas + read the CSV), and the first document;
  warm   --docs documents mapped one after another: documents/s and us/document;
  load   loading the table again in a warm process (what each run pays when pandas is loaded).
Target: --target documents/s warm (default 2000, i.e. mapping 10,000 documents takes < 5 s,
a small part of the 60 s backfill budget). Writes bench/results/mapping.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, machine, print_table, verdict, write_result  # noqa: E402

MAPPING = {
    "fields": {
        "invoice_number": "{number}",
        "vendor_code": {"lookup": "vendors", "key": "{supplier_number}", "column": "vendor_code", "default": "V-UNKNOWN"},
        "cost_center": {"lookup": "vendors", "key": "{supplier_number}", "column": "cost_center", "default": "CC-000"},
        "company_code": "{company_code}",
        "amount": {"from": "total"},
        "currency": {"constant": "EUR"},
    },
    "lookups": {"vendors": {"file": "vendors.csv", "key": "supplier_number"}},
    "folder": "{external_id}_{vat_number}/{doc_type}/{approved_at:%Y/%m}",
    "filename": "{vendor_code}_{number}_{supplier}.{ext}",
    "sidecar": True,
    "sanitize": {"allowed": "A-Za-z0-9._ -", "max_length": 150, "ascii": True},
}


def write_lookup(path: Path, rows: int) -> None:
    rng = random.Random(1)
    lines = ["supplier_number,vendor_code,cost_center,name,vat,iban"]
    for i in range(rows):
        lines.append(f"S-{i:06d},V-{i:06d},CC-{rng.randint(100, 999)},\"Supplier {i}, Société Générale\",BE0{rng.randint(10**8, 10**9 - 1)},"
                     f"BE{rng.randint(10**13, 10**14 - 1)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def setup(config_dir: Path):
    """The integration and its Config (no blocks: map_document needs none)."""
    from deployments.config import Config
    from deployments.schema import Integration

    integ = Integration.model_validate(dict(
        name="invoices-to-erp", client="bench", source="capture-inbox-folder/inbox", connection="local-folder-connection/out",
        activated_at="2026-01-01T00:00:00Z", identifiers={"external_id": "BENCH001", "vat_number": "BE0123456789", "company_code": "100"},
        mapping=MAPPING,
    ))
    return integ, Config(config_dir, {integ.key: integ}, {})


def documents(n: int, rows: int):
    import hashlib
    import io

    from tasks.documents import Document, DocumentFile

    rng = random.Random(2)
    body = b"%PDF-1.4\n" + b"x" * 1000
    digest = hashlib.sha256(body).hexdigest()
    base = datetime(2026, 3, 1, tzinfo=timezone.utc)
    out = []
    for i in range(n):
        supplier = f"S-{rng.randrange(rows):06d}" if i % 50 else "S-MISSING"
        files = [DocumentFile(name=f"INV-{i:06d}.pdf", media_type="application/pdf", size=len(body), sha256=digest)
                 .with_opener(lambda: io.BytesIO(body))]
        out.append(Document(
            id=f"INV-{i:06d}", client="bench", type="invoice", sub_organisation="finance", tags=["opex"], status="approved",
            approved_at=base + timedelta(minutes=i), version="v1", files=files,
            fields={"number": f"INV-2026-{i:06d}", "supplier": "Société Générale d'Électricité SA", "supplier_number": supplier,
                      "issue_date": "2026-02-27", "total": f"{100 + i % 900}.00"},
        ))
    return out


def cold(config_dir: str, rows: int) -> None:
    """In a fresh process: import, load the table, map the first document; prints a JSON line."""
    t0 = time.perf_counter()
    c0 = time.process_time()
    from tasks.mapping import Lookups, map_document

    import_s = time.perf_counter() - t0
    integ, config = setup(Path(config_dir))
    pandas_before = "pandas" in sys.modules
    t1 = time.perf_counter()
    lookups = Lookups(config, integ)
    load_s = time.perf_counter() - t1
    doc = documents(1, rows)[0]
    t2 = time.perf_counter()
    map_document(doc, integ, lookups)
    first_s = time.perf_counter() - t2
    print("RESULT " + json.dumps({"import_s": import_s, "load_s": load_s, "first_doc_s": first_s,
                                  "total_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                                  "pandas_loaded_before_table": pandas_before}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the lookup table (default 10000)")
    parser.add_argument("--docs", type=int, default=10_000, help="documents mapped warm (default 10000)")
    parser.add_argument("--target", type=float, default=2000.0, help="documents/s to reach warm (default 2000)")
    parser.add_argument("--cold", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cold:
        return cold(args.cold, args.rows)

    work = Path(tempfile.mkdtemp(prefix="docroute-mapping-bench-"))
    try:
        csv = work / "lookups" / "vendors.csv"
        write_lookup(csv, args.rows)
        colds = []
        for _ in range(3):
            proc = subprocess.run([sys.executable, __file__, "--cold", str(work), "--rows", str(args.rows)],
                                  capture_output=True, text=True, cwd=REPO, check=True)
            colds.append(json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:]))
        cold_fig = min(colds, key=lambda c: c["total_s"])

        from tasks.mapping import Lookups, map_document

        integ, config = setup(work)
        Lookups(config, integ)  # pandas imported
        t = time.perf_counter()
        lookups = Lookups(config, integ)
        reload_s = time.perf_counter() - t
        docs = documents(args.docs, args.rows)
        map_document(docs[0], integ, lookups)
        t, c = time.perf_counter(), time.process_time()
        packages = [map_document(d, integ, lookups) for d in docs]
        warm_s, warm_cpu = time.perf_counter() - t, time.process_time() - c
        defaults = sum(1 for p in packages if p.fields["cost_center"] == "CC-000")
        sample = packages[1]
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"cold run failed:\n{exc.stderr[-3000:]}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = args.docs / warm_s
    result = {
        "args": vars(args), "machine": machine(),
        "cold": cold_fig, "reload_table_s": reload_s,
        "warm_s": warm_s, "warm_cpu_s": warm_cpu, "docs_per_s": rate, "us_per_doc": 1e6 * warm_s / args.docs,
        "documents_with_default": defaults,
        "sample": {"path": sample.path_of(sample.main), "fields": sample.fields},
        "targets": {f"warm >= {args.target:g} documents/s": rate >= args.target},
    }
    path = write_result("mapping", result)
    print_table(
        f"Mapping with a {args.rows}-row lookup table (2 lookups, sidecar, sanitising per document)",
        [
            ("cold: import tasks.mapping (fresh process)", f"{cold_fig['import_s']:.3f}", ""),
            ("cold: load the table (import pandas + read CSV)", f"{cold_fig['load_s']:.3f}", ""),
            ("cold: first document", f"{1000 * cold_fig['first_doc_s']:.1f} ms", ""),
            ("load the table again, warm process", f"{reload_s:.3f}", ""),
            (f"warm: {args.docs} documents", f"{warm_s:.2f}", f"{rate:,.0f} docs/s, {1e6 * warm_s / args.docs:.0f} us/doc"),
            (f"target: >= {args.target:g} documents/s warm", "", verdict(rate >= args.target)),
        ],
        ("measure", "s", ""),
    )
    print(f"\nexample: {sample.doc_id} -> {result['sample']['path']} fields {sample.fields}")
    print(f"{defaults} documents used the cost_center default (supplier not in the table). Written to {path}")


if __name__ == "__main__":
    main()
