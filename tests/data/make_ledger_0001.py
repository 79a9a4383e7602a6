"""Write a ledger with today's (commit 67fc484) code: every table, every status, a cursor, events, a backfill."""
import sys
from datetime import datetime, timezone, timedelta
from tasks import ledger as L

url = sys.argv[1]
led = L.Ledger(url)
I = "acme/invoices"
info = lambda n: {"approved_at": datetime(2026, 11, n, 9, 0, tzinfo=timezone.utc), "fingerprint": f"{n}000:17{n}", "doc_type": "invoice", "number": f"INV-{n}", "supplier": "Globex BV"}
led.begin_attempts(I, [(f"ACME-{n}", f"v{n}", info(n)) for n in range(1, 7)], "run-1")
led.record(I, [L.Result("ACME-1", "v1", remote_ref="acme/invoice/ACME-1.pdf"),
               L.Result("ACME-2", "v2", remote_ref="acme/invoice/ACME-2.pdf", already_present=True),
               L.Result("ACME-3", "v3", error="document ACME-3: 503 from receiver", permanent=False),
               L.Result("ACME-4", "v4", error="document ACME-4: lookup key 'X' missing", permanent=True),
               L.Result("ACME-5", "v5", error="document ACME-5: lookup key 'Y' missing", permanent=True)], max_attempts=1, run="run-1")
led.discard(I, ["ACME-5"], "by ops: duplicate scan", "run-2")
led.note_waiting(I, "ACME-7", "unreadable", "document ACME-7: ACME-7.json is still being written", "run-2")
led.begin_attempts(I, [("ACME-1", "v1b", info(1))], "run-3")  # a new version: v1 stays delivered, v1b is sending
led.supersede(I, "ACME-6", "v6", "no longer matches the integration's filters", "run-3")
led.set_cursor(I, datetime(2026, 11, 20, 12, 30, tzinfo=timezone.utc), "run-3")
led.set_cursor("globex/archive", datetime(2026, 11, 19, 8, 0, tzinfo=timezone.utc), "run-4")
led.add_events(I, [("ACME-4", "v4", "retry-requested", "by ops: vendor added")], "run-5")
bid = "b" * 32
led.open_backfill(bid, I, '{"since": "2026-10-01"}', 3, "run-6")
led.record_backfill_chunk(bid, datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 10, 8, tzinfo=timezone.utc) - timedelta(microseconds=1), "done", "2 delivered", "run-7")
led.dispose()
