"""The ledger on SQLite and PostgreSQL: statuses, attempts, supersede, events, cursor and the run lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest

from tasks import ledger as L
from tasks.documents import Document
from tasks.ledger import Ledger, LockTimeout, Result
from tests.conftest import utc

PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pg_url():
    """A throwaway PostgreSQL database for this module, dropped at the end."""
    name = f"docroute_t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(**PG)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def ledger(url):
    led = Ledger(url)
    yield led
    led.dispose()


@pytest.fixture
def second(url):
    """Another Ledger object on the same database: another run."""
    led = Ledger(url)
    yield led
    led.dispose()


@pytest.fixture
def key() -> str:
    """A fresh integration per test: tests share one database per backend."""
    return f"acme/invoices-{uuid.uuid4().hex[:8]}"


def doc(doc_id: str = "INV-1", version: str = "v1") -> Document:
    return Document(id=doc_id, client="acme", type="invoice", status="approved", approved_at=utc(2026, 3, 5), version=version)


INFO = {"approved_at": datetime(2026, 3, 5, 11, 30, tzinfo=timezone(timedelta(hours=1))), "fingerprint": "10:1", "doc_type": "invoice",
        "number": "N-1", "supplier": "Globex"}


def events(ledger: Ledger, key: str, doc_id: str | None = None) -> list[tuple]:
    return [(e["doc_id"], e["version"], e["event"], e["detail"], e["run"]) for e in ledger.events_of(key, doc_id)]


# -- documents --------------------------------------------------------------------------------------


def test_attempt_then_delivered(ledger, key):
    before = datetime.now(timezone.utc)
    ledger.start_attempt(key, doc(), INFO, run="r1")
    row = ledger.row(key, "INV-1", "v1")
    assert (row["status"], row["attempts"], row["last_run"]) == (L.PENDING, 0, "r1")
    assert row["sending_since"] >= before - timedelta(seconds=1) and row["sending_since"].tzinfo is not None
    assert row["approved_at"] == utc(2026, 3, 5, 10, 30)  # stored as the same instant, read back in UTC
    assert (row["fingerprint"], row["number"], row["supplier"]) == ("10:1", "N-1", "Globex")
    ledger.mark_delivered(key, "INV-1", "v1", "acme/invoice/INV-1.pdf", already_present=False, run="r1")
    row = ledger.row(key, "INV-1", "v1")
    assert (row["status"], row["remote_ref"], row["sending_since"], row["last_error"]) == (L.DELIVERED, "acme/invoice/INV-1.pdf", None, None)
    assert row["delivered_at"] >= row["first_seen"] >= before - timedelta(seconds=1)
    assert events(ledger, key) == [
        ("INV-1", "v1", "attempt", None, "r1"),
        ("INV-1", "v1", "delivered", "acme/invoice/INV-1.pdf", "r1"),
    ]
    assert ledger.counts(key) == {L.DELIVERED: 1}


def test_already_present_is_a_delivery_with_its_own_event(ledger, key):
    ledger.start_attempt(key, doc(), INFO, run="r2")
    ledger.mark_delivered(key, "INV-1", "v1", "ref-1", already_present=True, run="r2")
    assert ledger.row(key, "INV-1", "v1")["status"] == L.DELIVERED
    assert [e[2] for e in events(ledger, key)] == ["attempt", "already-present"]


def test_permanent_failure_is_parked_after_max_attempts(ledger, key):
    statuses = []
    for run in range(3):
        ledger.start_attempt(key, doc(), INFO, run=f"r{run}")
        statuses.append(ledger.mark_failed(key, "INV-1", "v1", f"HTTP 400 bad content #{run}", permanent=True, max_attempts=3, run=f"r{run}"))
    assert statuses == [L.FAILED, L.FAILED, L.NEEDS_ATTENTION]
    row = ledger.row(key, "INV-1", "v1")
    assert (row["status"], row["attempts"], row["last_error"], row["sending_since"]) == (L.NEEDS_ATTENTION, 3, "HTTP 400 bad content #2", None)
    assert ledger.rows(key, statuses=(L.NEEDS_ATTENTION,))[0]["doc_id"] == "INV-1"
    assert ledger.rows(key, statuses=L.OPEN_STATUSES) == []


def test_max_attempts_one_parks_at_once(ledger, key):
    assert ledger.mark_failed(key, "X", "v1", "no such supplier", permanent=True, max_attempts=1) == L.NEEDS_ATTENTION
    row = ledger.row(key, "X", "v1")
    assert (row["status"], row["attempts"]) == (L.NEEDS_ATTENTION, 1)


def test_transient_failure_stays_failed_however_often(ledger, key):
    for run in range(5):
        status = ledger.mark_failed(key, "INV-1", "v1", "timeout " + "x" * 3000, permanent=False, max_attempts=2, info=INFO, run=f"r{run}")
        assert status == L.FAILED
    row = ledger.row(key, "INV-1", "v1")
    assert (row["status"], row["attempts"], row["number"]) == (L.FAILED, 5, "N-1")
    assert len(row["last_error"]) == 2000 and row["last_error"].startswith("timeout x")
    # then a success
    ledger.mark_delivered(key, "INV-1", "v1", "ref", already_present=False, run="r5")
    row = ledger.row(key, "INV-1", "v1")
    assert (row["status"], row["last_error"], row["attempts"]) == (L.DELIVERED, None, 5)


def test_a_new_version_supersedes_older_open_or_parked_ones_not_delivered_ones(ledger, key):
    ledger.mark_failed(key, "A", "v1", "bad", permanent=False, max_attempts=3, run="r1")
    ledger.mark_failed(key, "B", "v1", "bad", permanent=True, max_attempts=1, run="r1")
    ledger.start_attempt(key, doc("C", "v1"), {}, run="r1")
    ledger.mark_delivered(key, "C", "v1", "ref-c1", already_present=False, run="r1")
    ledger.start_attempt(key, doc("D", "v1"), {}, run="r1")  # pending (crashed mid-send)
    for d in "ABCD":
        ledger.start_attempt(key, doc(d, "v2"), {}, run="r2")
    status = {(r["doc_id"], r["version"]): r["status"] for r in ledger.rows(key)}
    assert status == {
        ("A", "v1"): L.SUPERSEDED, ("B", "v1"): L.SUPERSEDED, ("C", "v1"): L.DELIVERED, ("D", "v1"): L.SUPERSEDED,
        ("A", "v2"): L.PENDING, ("B", "v2"): L.PENDING, ("C", "v2"): L.PENDING, ("D", "v2"): L.PENDING,
    }
    assert ledger.row(key, "B", "v2")["attempts"] == 0  # a new version starts counting afresh
    assert ledger.counts(key) == {L.SUPERSEDED: 3, L.DELIVERED: 1, L.PENDING: 4}


def test_supersede_and_note_waiting(ledger, key):
    ledger.note_waiting(key, "W", L.UNREADABLE, "W.pdf is still being written", run="r1")
    row = ledger.row(key, "W", L.UNREADABLE)
    assert (row["status"], row["attempts"], row["last_error"]) == (L.PENDING, 0, "W.pdf is still being written")
    ledger.note_waiting(key, "W", L.UNREADABLE, "still", run="r2")
    assert ledger.row(key, "W", L.UNREADABLE)["attempts"] == 0  # waiting never counts as an attempt
    ledger.supersede(key, "W", L.UNREADABLE, "no longer in the source", run="r3")
    assert ledger.row(key, "W", L.UNREADABLE)["status"] == L.SUPERSEDED
    assert events(ledger, key, "W") == [
        ("W", L.UNREADABLE, "waiting", "W.pdf is still being written", "r1"),
        ("W", L.UNREADABLE, "waiting", "still", "r2"),
        ("W", L.UNREADABLE, L.SUPERSEDED, "no longer in the source", "r3"),
    ]


def test_events_are_an_audit_trail_per_document(ledger, key):
    ledger.start_attempt(key, doc("A"), {}, run="r1")
    ledger.mark_failed(key, "A", "v1", "503", permanent=False, max_attempts=3, run="r1")
    ledger.start_attempt(key, doc("B"), {}, run="r1")
    ledger.mark_delivered(key, "B", "v1", "ref-b", already_present=False, run="r1")
    ledger.start_attempt(key, doc("A"), {}, run="r2")
    ledger.mark_delivered(key, "A", "v1", "ref-a", already_present=False, run="r2")
    assert events(ledger, key, "A") == [
        ("A", "v1", "attempt", None, "r1"),
        ("A", "v1", L.FAILED, "503", "r1"),
        ("A", "v1", "attempt", None, "r2"),
        ("A", "v1", "delivered", "ref-a", "r2"),
    ]
    assert [e[0] for e in events(ledger, key)] == ["A", "A", "B", "B", "A", "A"]
    assert all(e["at"].tzinfo is not None for e in ledger.events_of(key))
    assert ledger.events_of("other/integration") == []


def test_rows_are_per_integration_and_filter_by_ids_and_status(ledger, key):
    other = key + "-other"
    for i in range(3):
        ledger.start_attempt(key, doc(f"D{i}"), {}, run=None)
    ledger.start_attempt(other, doc("D0"), {}, run=None)
    ledger.mark_delivered(key, "D1", "v1", "ref", already_present=False, run=None)
    assert [r["doc_id"] for r in ledger.rows(key)] == ["D0", "D1", "D2"]
    assert [r["doc_id"] for r in ledger.rows(key, doc_ids=["D2", "D1", "nope"])] == ["D1", "D2"]
    assert [r["doc_id"] for r in ledger.rows(key, statuses=(L.DELIVERED,))] == ["D1"]
    assert [r["integration"] for r in ledger.rows(other)] == [other]
    assert ledger.row(key, "D1", "v2") is None


def test_unique_per_integration_document_and_version(ledger, key):
    import sqlalchemy as sa

    ledger.start_attempt(key, doc(), {}, run=None)
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as conn:
        now = L.utcnow()
        conn.execute(L.documents.insert().values(integration=key, doc_id="INV-1", version="v1", status=L.PENDING, attempts=0,
                                                 first_seen=now, updated_at=now))


def test_batched_attempts_and_results_in_one_transaction_each(ledger, key):
    ledger.mark_failed(key, "PARK", "v1", "bad", permanent=True, max_attempts=2, run="r0")
    ledger.mark_failed(key, "OLD", "v1", "bad", permanent=False, max_attempts=2, run="r0")
    entries = [
        ("OK", "v1", INFO),
        ("HERE", "v1", {}),  # a different set of keys must not lose the others' values
        ("SLOW", "v1", {"number": "S-1"}),
        ("PARK", "v1", INFO),
        ("OLD", "v2", INFO),
    ]
    ledger.begin_attempts(key, entries, run="r1")
    assert {(r["doc_id"], r["version"]): r["status"] for r in ledger.rows(key)} == {
        ("PARK", "v1"): L.FAILED, ("OLD", "v1"): L.SUPERSEDED, ("OK", "v1"): L.PENDING, ("HERE", "v1"): L.PENDING,
        ("SLOW", "v1"): L.PENDING, ("OLD", "v2"): L.PENDING,
    }
    assert ledger.row(key, "OK", "v1")["number"] == "N-1" and ledger.row(key, "SLOW", "v1")["number"] == "S-1"
    assert all(r["sending_since"] is not None for r in ledger.rows(key, statuses=(L.PENDING,)))
    statuses = ledger.record(key, [
        Result("OK", "v1", remote_ref="ref-ok"),
        Result("HERE", "v1", remote_ref="ref-here", already_present=True),
        Result("SLOW", "v1", error="503 Service Unavailable", permanent=False),
        Result("PARK", "v1", error="400 invalid UBL", permanent=True, info={"supplier": "Parked Ltd"}),
        Result("OLD", "v2", error="400 invalid UBL", permanent=True),
    ], max_attempts=2, run="r1")
    assert statuses == {"OK": L.DELIVERED, "HERE": L.DELIVERED, "SLOW": L.FAILED, "PARK": L.NEEDS_ATTENTION, "OLD": L.FAILED}
    rows = {(r["doc_id"], r["version"]): r for r in ledger.rows(key)}
    assert (rows["OK", "v1"]["remote_ref"], rows["HERE", "v1"]["remote_ref"]) == ("ref-ok", "ref-here")
    assert (rows["PARK", "v1"]["attempts"], rows["PARK", "v1"]["supplier"]) == (2, "Parked Ltd")
    assert (rows["SLOW", "v1"]["attempts"], rows["SLOW", "v1"]["last_error"]) == (1, "503 Service Unavailable")
    assert rows["OLD", "v2"]["attempts"] == 1  # a new version counts afresh
    assert [e[2] for e in events(ledger, key) if e[4] == "r1"] == ["attempt"] * 5 + [
        "delivered", "already-present", L.FAILED, L.NEEDS_ATTENTION, L.FAILED]


def test_batches_larger_than_a_query_chunk(ledger, key):
    ids = [f"D{i:05d}" for i in range(1200)]
    ledger.begin_attempts(key, [(d, "v1", {"number": d}) for d in ids], run="r1")
    ledger.record(key, [Result(d, "v1", remote_ref=f"ref/{d}") for d in ids[:700]]
                  + [Result(d, "v1", error="timeout") for d in ids[700:]], max_attempts=3, run="r1")
    assert ledger.counts(key) == {L.DELIVERED: 700, L.FAILED: 500}
    ledger.record(key, [Result(d, "v1", error="timeout again") for d in ids[700:]], max_attempts=3, run="r2")
    assert {r["attempts"] for r in ledger.rows(key, statuses=(L.FAILED,))} == {2}
    assert ledger.row(key, "D01199", "v1")["number"] == "D01199"


# -- cursor -----------------------------------------------------------------------------------------


def test_cursor_is_the_source_s_opaque_text_and_a_timezone_aware_utc_window_end(ledger, key):
    assert ledger.cursor(key) is None
    first = datetime(2026, 3, 5, 10, 30, 15, 123456, tzinfo=timezone.utc)
    delta_link = "https://graph.example/drives/x/root/delta?token=aBc%3D%3D&$select=id,name"
    ledger.set_cursor(key, delta_link, first, run="r1")
    got = ledger.cursor(key)
    assert got.position == delta_link  # opaque: stored and given back as it is
    assert got.checked_until == first and got.checked_until.utcoffset() == timedelta(0)
    brussels = datetime(2026, 3, 6, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    ledger.set_cursor(key, None, brussels, run="r2")
    got = ledger.cursor(key)
    assert got.position is None
    assert got.checked_until == brussels == utc(2026, 3, 6, 11, 0)  # the same instant
    assert got.checked_until.utcoffset() == timedelta(0) and got.last_run == "r2"
    assert ledger.cursor(key + "-other") is None
    cursor_events = [json.loads(e["detail"]) | {"run": e["run"]} for e in ledger.events_of(key) if e["event"] == "cursor"]
    assert cursor_events == [{"position": delta_link, "checked_until": first.isoformat(), "run": "r1"},
                             {"position": None, "checked_until": brussels.isoformat(), "run": "r2"}]


def test_cursor_survives_a_new_ledger_object(url, key):
    first = Ledger(url)
    first.set_cursor(key, "page-token-42", utc(2026, 1, 2, 3, 4, 5))
    first.dispose()
    second = Ledger(url)
    try:
        assert second.cursor(key).position == "page-token-42"
        assert second.cursor(key).checked_until == utc(2026, 1, 2, 3, 4, 5)
    finally:
        second.dispose()


# -- lock -------------------------------------------------------------------------------------------


def test_a_second_holder_times_out_while_the_first_holds_the_lock(ledger, second, key):
    with ledger.lock(key, timeout=5):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=f"integration {key}: another run still holds the lock"):
            with second.lock(key, timeout=0.5):
                pytest.fail("got a lock another holder has")
        assert 0.5 <= time.monotonic() - started < 3
        with ledger.lock(key + "-other", timeout=0.5):  # other integrations are not blocked
            pass
    with ledger.lock(key, timeout=0.5):  # released on exit
        pass


def test_a_waiting_holder_gets_the_lock_when_the_first_releases_it(ledger, second, key):
    held, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first():
        with ledger.lock(key, timeout=5):
            order.append("first in")
            held.set()
            release.wait(5)
            order.append("first out")

    t = threading.Thread(target=first)
    t.start()
    assert held.wait(5)
    threading.Timer(0.6, release.set).start()
    started = time.monotonic()
    with second.lock(key, timeout=10):
        order.append("second in")
        waited = time.monotonic() - started
    t.join(5)
    assert order == ["first in", "first out", "second in"]
    assert 0.5 <= waited < 5


def test_the_lock_is_released_on_an_exception(ledger, key):
    with pytest.raises(ZeroDivisionError):
        with ledger.lock(key, timeout=1):
            1 / 0
    with ledger.lock(key, timeout=0.5):
        pass


def test_postgresql_lock_holder_is_not_left_idle_in_a_transaction(pg_url, key):
    """A run holds the lock for minutes: an open transaction would block VACUUM and be ended by
    idle_in_transaction_session_timeout, taking the lock with it."""
    led = Ledger(pg_url)
    admin = psycopg2.connect(**PG)
    admin.autocommit = True
    try:
        with led.lock(key, timeout=1), admin.cursor() as cur:
            cur.execute(
                "SELECT a.state, a.xact_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND a.datname = %s",
                (led.url.database,),
            )
            holders = cur.fetchall()
        assert holders == [("idle", None)]
    finally:
        admin.close()
        led.dispose()


HOLDER = """
import sys, time
from tasks.ledger import Ledger
with Ledger(sys.argv[1]).lock(sys.argv[2], timeout=10):
    print("LOCKED", flush=True)
    time.sleep(120)
"""


def test_the_lock_dies_with_the_process_that_held_it(ledger, key):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, ledger.url.render_as_string(hide_password=False), key],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "LOCKED", line + proc.stdout.read() if proc.poll() is not None else line
        with pytest.raises(LockTimeout):
            with ledger.lock(key, timeout=0.3):
                pytest.fail("got a lock a live process holds")
        os.kill(proc.pid, signal.SIGKILL)  # no cleanup code runs
        proc.wait(10)
        started = time.monotonic()
        with ledger.lock(key, timeout=10):
            assert time.monotonic() - started < 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def _open_ledger(url: str, barrier, results) -> None:
    barrier.wait()  # every process creates the schema at the same moment
    try:
        Ledger(url).dispose()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}"[:300])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_runs_starting_together_on_a_new_ledger_all_get_its_tables(backend, tmp_path):
    """Served runs of several integrations start at once on a fresh ledger: none may fail creating it."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for attempt in range(5):
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / f'ledger-{attempt}.db'}"
            drop = None
        else:
            name = f"race_{uuid.uuid4().hex[:10]}"
            admin = psycopg2.connect(**PG)
            admin.autocommit = True
            admin.cursor().execute(f"CREATE DATABASE {name}")
            url, drop = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}/{name}", name
        try:
            barrier, results = ctx.Barrier(4), ctx.Queue()
            procs = [ctx.Process(target=_open_ledger, args=(url, barrier, results)) for _ in range(4)]
            for p in procs:
                p.start()
            for p in procs:
                p.join(60)
            outcomes = [results.get(timeout=10) for _ in procs]
            assert outcomes == ["ok"] * 4, outcomes
            ledger = Ledger(url)
            assert ledger.rows("any") == [] and ledger.cursor("any") is None  # the tables are there
            ledger.dispose()
        finally:
            if drop:
                admin.cursor().execute(f"DROP DATABASE IF EXISTS {drop} WITH (FORCE)")
                admin.close()
