"""SFTP-specific behaviour, against the real sshd of harness_sftp (no mocks).

The server is local: tests arrange and inspect its folders directly, and read the
requests it logged (start_sshd(sftp_log=True)) to see what the client asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from blocks.sftp import SftpConnection, parse_host_key
from tasks.connectors.base import Mode, PermanentDeliveryError, TransientDeliveryError
from tasks.connectors.sftp import SftpConnector
from tests.connectors.conformance import make_package


def _pdf(harness, package) -> Path:
    return harness.root / package.path_of(package.main)


def _requests_since(server, mark: int) -> str:
    return server.sftp_log()[mark:]


# -- host key ------------------------------------------------------------------
def test_host_key_mismatch_is_a_clear_permanent_error_and_nothing_is_sent(sftp_harness, tmp_path):
    server = sftp_harness.server
    other_key = (server.workdir / "user_plain.pub").read_text()  # a real ed25519 key, not the host's
    conn = sftp_harness.connection(host_key=f"[127.0.0.1]:{server.port} {other_key}")
    logins = server.logins()
    connector = conn.connector()
    with pytest.raises(PermanentDeliveryError) as info:
        with connector:
            connector.deliver(make_package(tmp_path))
    text = str(info.value)
    _, pinned = parse_host_key(other_key)
    _, actual = parse_host_key(server.host_key_pub)
    assert "host key mismatch" in text and f"127.0.0.1:{server.port}" in text
    assert pinned in text and actual in text
    assert server.password not in text
    assert server.logins() == logins  # never authenticated: the password never went to that server
    assert list(sftp_harness.root.iterdir()) == []
    assert not connector.check().ok


def test_a_pinned_fingerprint_works_and_a_wrong_one_is_refused(sftp_harness, tmp_path):
    _, fingerprint = parse_host_key(sftp_harness.server.host_key_pub)
    with sftp_harness.connection(host_key=fingerprint).connector() as connector:
        assert connector.check().ok
    wrong = "SHA256:" + "A" * 43
    result = sftp_harness.connection(host_key=wrong).connector().check()
    assert not result.ok and wrong in result.message and fingerprint in result.message


def test_host_key_is_required_unless_verification_is_explicitly_off(sftp_harness, tmp_path):
    with pytest.raises(ValueError, match="host_key is required"):
        sftp_harness.connection(host_key=None)
    with pytest.raises(ValueError, match="known_hosts line"):
        sftp_harness.connection(host_key="not a key")
    conn = sftp_harness.connection(host_key=None, verify_host_key=False)
    with conn.connector() as connector:
        package = make_package(tmp_path)
        connector.deliver(package)
    assert sftp_harness.received(package, package.main) == package.main.open().read()


# -- authentication ---------------------------------------------------------------
def test_key_auth_with_passphrase(sftp_harness, tmp_path):
    server = sftp_harness.server
    key = server.user_key_encrypted.read_text()
    conn = sftp_harness.connection(password=None, private_key=key, private_key_passphrase=server.key_passphrase)
    package = make_package(tmp_path)
    with conn.connector() as connector:
        connector.deliver(package)
    assert sftp_harness.received(package, package.main) == package.main.open().read()
    assert "Accepted publickey for docroute-test" in server.log_text()

    bad = sftp_harness.connection(password=None, private_key=key, private_key_passphrase="not the passphrase")
    with pytest.raises(PermanentDeliveryError) as info:
        bad.connector().open()
    assert "private_key" in str(info.value) and "not the passphrase" not in str(info.value)
    missing = sftp_harness.connection(password=None, private_key=key)
    with pytest.raises(PermanentDeliveryError, match="private_key_passphrase"):
        missing.connector().open()


def test_wrong_password_names_host_and_user(sftp_harness, tmp_path):
    with pytest.raises(PermanentDeliveryError) as info:
        sftp_harness.bad_credentials().connector().open()
    text = str(info.value)
    assert "docroute-test" in text and f"127.0.0.1:{sftp_harness.server.port}" in text
    assert sftp_harness.server.password not in text
    with pytest.raises(PermanentDeliveryError) as info:  # deliver without open: connects, and names the document
        sftp_harness.bad_credentials().connector().deliver(make_package(tmp_path, "INV-PW"))
    assert "INV-PW" in str(info.value) and sftp_harness.server.password not in str(info.value)


# -- existing targets ------------------------------------------------------------
def test_skip_identical_skips_same_files_and_replaces_different_ones(sftp_harness, tmp_path):
    package = make_package(tmp_path)
    with sftp_harness.connection().connector() as connector:
        connector.deliver(package)
        target = _pdf(sftp_harness, package)
        inode = target.stat().st_ino
        again = connector.deliver(package)
        assert again.already_present and target.stat().st_ino == inode  # not rewritten
        target.write_bytes(b"older, shorter version")
        assert not connector.deliver(package).already_present
    assert target.read_bytes() == package.main.open().read()


def test_skip_identical_with_hash_replaces_same_size_other_content(sftp_harness, tmp_path):
    package = make_package(tmp_path)
    data = package.main.open().read()
    with sftp_harness.connection(verify="hash").connector() as connector:
        connector.deliver(package)
        target = _pdf(sftp_harness, package)
        target.write_bytes(bytes(len(data)))  # same size, other bytes
        assert not connector.deliver(package).already_present
        assert target.read_bytes() == data
        assert connector.deliver(package).already_present  # and the hash says identical now


def test_overwrite_always_replaces(sftp_harness, tmp_path):
    package = make_package(tmp_path)
    with sftp_harness.connection(if_exists="overwrite").connector() as connector:
        connector.deliver(package)
        target = _pdf(sftp_harness, package)
        inode = target.stat().st_ino
        delivery = connector.deliver(package)
    assert not delivery.already_present
    assert target.stat().st_ino != inode  # a new file was renamed into place
    assert target.read_bytes() == package.main.open().read()


def test_fail_refuses_different_content_and_accepts_identical(sftp_harness, tmp_path):
    package = make_package(tmp_path, "INV-7007")
    with sftp_harness.connection(if_exists="fail").connector() as connector:
        connector.deliver(package)
        assert connector.deliver(package).already_present
        target = _pdf(sftp_harness, package)
        target.write_bytes(b"someone else's file")
        with pytest.raises(PermanentDeliveryError) as info:
            connector.deliver(package)
    assert "INV-7007" in str(info.value) and "if_exists=fail" in str(info.value)
    assert target.read_bytes() == b"someone else's file"
    assert sftp_harness.leftovers(package) == []


def test_without_posix_rename_an_existing_target_is_replaced(sftp_harness, tmp_path):
    server = sftp_harness.server
    package = make_package(tmp_path)
    target = _pdf(sftp_harness, package)
    target.parent.mkdir(parents=True)
    os.chown(target.parent, server.uid, server.gid)
    target.write_bytes(b"old")
    mark = len(server.sftp_log())
    with sftp_harness.connection(use_posix_rename=False).connector() as connector:
        connector.deliver(package)
    assert target.read_bytes() == package.main.open().read()
    assert sftp_harness.leftovers(package) == []
    requests = _requests_since(server, mark)
    assert f'rename old "{target.parent}/.INV-1001.pdf.' in requests
    assert f'remove name "{target}"' in requests
    assert "posix-rename" not in requests


# -- folders -----------------------------------------------------------------------
def test_missing_folders_are_created_with_a_day_folder(sftp_harness, tmp_path):
    package = make_package(tmp_path, folder="acme/deep/er/still")
    with sftp_harness.connection(day_folder=True).connector() as connector:
        delivery = connector.deliver(package)
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    path = sftp_harness.root / "acme/deep/er/still" / day / package.main.name
    assert path.read_bytes() == package.main.open().read()
    assert delivery.remote_ref.endswith(f"/acme/deep/er/still/{day}/{package.main.name}")


def test_a_folder_that_cannot_be_created_is_a_permanent_error_naming_it(sftp_harness, tmp_path):
    locked = sftp_harness.root / "locked"
    locked.mkdir()  # owned by root; the test user connects
    locked.chmod(0o555)
    package = make_package(tmp_path, "INV-8008", folder="locked/acme")
    with sftp_harness.connection().connector() as connector:
        with pytest.raises(PermanentDeliveryError) as info:
            connector.deliver(package)
        text = str(info.value)
        assert "INV-8008" in text and f"{locked}/acme" in text and "127.0.0.1" in text
        assert "permission denied" in text
        # the connection is still good for the next document
        ok = make_package(tmp_path, "INV-8009")
        connector.deliver(ok)
    assert sftp_harness.received(ok, ok.main) is not None


@pytest.mark.parametrize("drop_box", [False, True], ids=["normal", "drop-box"])
def test_a_full_disk_is_a_permanent_error_and_leaves_nothing(sftp_harness, tmp_path, drop_box):
    """The write errors themselves are checked: in drop-box mode no fstat would catch a short file."""
    server = sftp_harness.server
    small = sftp_harness.root / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size=256k,uid={server.uid},gid={server.gid},mode=755", "tmpfs", str(small)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        package = make_package(tmp_path, "INV-FULL", folder="small", pdf_size=1_000_000)
        with sftp_harness.connection(drop_box=drop_box).connector() as connector:
            with pytest.raises(PermanentDeliveryError) as info:
                connector.deliver(package)
            text = str(info.value)
            assert "disk full" in text
            assert "INV-FULL" in text and str(small) in text and "127.0.0.1" in text
            assert list(small.iterdir()) == []  # the temp file was removed, nothing has the final name
            fits = make_package(tmp_path, "INV-FITS", folder="small", pdf_size=10_000)
            connector.deliver(fits)  # the connection survived the refusal
        assert sftp_harness.received(fits, fits.main) == fits.main.open().read()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_check_fails_clearly_on_a_read_only_or_missing_folder(sftp_harness):
    readonly = sftp_harness.root / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    result = sftp_harness.connection(base_folder=str(readonly)).connector().check()
    assert not result.ok
    assert str(readonly) in result.message and "permission denied" in result.message
    missing = sftp_harness.root / "nope"
    result = sftp_harness.connection(base_folder=str(missing)).connector().check()
    assert not result.ok and "does not exist" in result.message
    result = sftp_harness.connection().connector().check()
    assert result.ok and list(sftp_harness.root.iterdir()) == [readonly]  # the probe was removed


def test_test_mode_writes_to_the_test_folder(sftp_harness, tmp_path):
    package = make_package(tmp_path, mode=Mode.TEST)
    with sftp_harness.connection().connector(Mode.TEST) as connector:
        connector.deliver(package)
    test_root = Path(str(sftp_harness.root) + "-test")
    assert (test_root / package.path_of(package.main)).read_bytes() == package.main.open().read()
    assert sftp_harness.received(package, package.main) is None
    with pytest.raises(PermanentDeliveryError, match="test_folder"):
        sftp_harness.connection(test_folder=None).connector(Mode.TEST).deliver(package)


def test_remove_partial_removes_only_this_packages_temp_files(sftp_harness, tmp_path):
    package = make_package(tmp_path)
    folder = sftp_harness.server.mkdir(f"{sftp_harness.root.name}/{package.folder}")
    (folder / ".INV-1001.pdf.1a2b3c4d.partial").write_bytes(b"half")
    (folder / ".INV-9999.pdf.1a2b3c4d.partial").write_bytes(b"another document's")
    (folder / "INV-1001.pdf").write_bytes(b"final name: kept")
    connector = sftp_harness.connection().connector()
    with connector:
        connector.remove_partial(package)
    assert sorted(p.name for p in folder.iterdir()) == [".INV-9999.pdf.1a2b3c4d.partial", "INV-1001.pdf"]


# -- drop box ---------------------------------------------------------------------
def test_drop_box_delivers_while_the_server_takes_files_away(sftp_harness, tmp_path):
    """A picker removes every file as soon as it has its final name; the upload must not look for it."""
    server = sftp_harness.server
    folder = sftp_harness.root / "dropbox"
    folder.mkdir()
    os.chown(folder, server.uid, server.gid)
    picked: list[str] = []
    stop = threading.Event()

    def picker():
        while not stop.is_set():
            for entry in os.scandir(folder):
                if not entry.name.endswith(".partial"):
                    picked.append(entry.name)
                    os.unlink(entry.path)
            time.sleep(0.0005)

    thread = threading.Thread(target=picker, daemon=True)
    thread.start()
    packages = [make_package(tmp_path, f"INV-D{i}", folder="dropbox") for i in range(5)]
    mark = len(server.sftp_log())
    try:
        with sftp_harness.connection(drop_box=True).connector() as connector:
            deliveries = [connector.deliver(p) for p in packages]
            assert connector.lookup(packages[0]) is None  # only the ledger knows
    finally:
        time.sleep(0.05)
        stop.set()
        thread.join()
    assert all(not d.already_present for d in deliveries)
    assert sorted(picked) == sorted(f.name for p in packages for f in p.files)
    requests = _requests_since(server, mark)
    for p in packages:
        for f in p.files:
            final = f'"{folder}/{f.name}"'
            # no existence check before and no stat after: the final name is only a rename target
            assert not re.search(rf'(stat name|open) {re.escape(final)}', requests), f.name
            assert f"new {final}" in requests


# -- one connection per run, and reconnecting --------------------------------------
def test_one_connection_is_reused_for_every_document(sftp_harness, tmp_path):
    server = sftp_harness.server
    logins = server.logins()
    with sftp_harness.connection().connector() as connector:
        transport = connector.transport
        for i in range(20):
            connector.deliver(make_package(tmp_path, f"INV-R{i:02d}", pdf_size=5_000))
        assert connector.transport is transport
        assert connector.connects == 1
    assert server.logins() == logins + 1
    assert not transport.is_active()  # close() closed it


def _session_pids(client_port: int) -> list[int]:
    """sshd processes serving the connection whose client side uses client_port (processes we started)."""
    out = subprocess.run(["ss", "-tnpH", f"( dport = :{client_port} )"], capture_output=True, text=True).stdout
    return sorted({int(pid) for pid in re.findall(r"pid=(\d+)", out)})


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # the session's other process may be gone already
            os.kill(pid, signal.SIGKILL)


class _KillingStream(io.RawIOBase):
    """A source that kills the SSH session after the first chunk: the connection dies mid-upload."""

    def __init__(self, path: Path, kill):
        self._fh = path.open("rb")
        self._kill = kill

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._kill is not None:
            self._kill()
            self._kill = None
            time.sleep(0.2)  # let the client's transport see the reset
        return self._fh.readinto(buf)

    def close(self) -> None:
        self._fh.close()
        super().close()


def test_a_connection_killed_mid_upload_is_transient_and_the_next_deliver_reconnects(sftp_harness, tmp_path):
    with sftp_harness.connection().connector() as connector:
        connector.deliver(make_package(tmp_path, "INV-K1"))
        pids = _session_pids(connector.transport.sock.getsockname()[1])
        assert pids and sftp_harness.server.proc.pid not in pids

        def kill():
            _kill(pids)

        broken = make_package(tmp_path, "INV-K2", pdf_size=2_000_000)
        source = tmp_path / f"src-INV-K2-{broken.main.name}"
        killing = dataclasses.replace(broken.main, opener=lambda: _KillingStream(source, kill))
        with pytest.raises(TransientDeliveryError) as info:
            connector.deliver(dataclasses.replace(broken, files=[killing, *broken.files[1:]]))
        assert "INV-K2" in str(info.value) and "reconnect" in str(info.value)
        assert sftp_harness.received(broken, broken.main) is None
        connector.deliver(broken)  # the retry: a new connection
        assert connector.connects == 2
    assert sftp_harness.received(broken, broken.main) == broken.main.open().read()
    connector.remove_partial(broken)  # what the killed upload left as a temp file, if anything
    assert sftp_harness.leftovers(broken) == []


def test_a_connection_that_died_between_documents_is_replaced_silently(sftp_harness, tmp_path):
    with sftp_harness.connection().connector() as connector:
        connector.deliver(make_package(tmp_path, "INV-K3"))
        _kill(_session_pids(connector.transport.sock.getsockname()[1]))
        time.sleep(0.2)
        package = make_package(tmp_path, "INV-K4")
        connector.deliver(package)
        assert connector.connects == 2
    assert sftp_harness.received(package, package.main) == package.main.open().read()


def test_a_server_that_stops_answering_times_out_as_transient(sftp_harness, tmp_path):
    with sftp_harness.connection(timeout=1).connector() as connector:
        connector.deliver(make_package(tmp_path, "INV-T1"))
        pids = _session_pids(connector.transport.sock.getsockname()[1])
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(TransientDeliveryError) as info:
                connector.deliver(make_package(tmp_path, "INV-T2"))
            assert time.monotonic() - started < 5
            assert "INV-T2" in str(info.value) and "timed out" in str(info.value)
        finally:
            _kill(pids)  # SIGKILL also ends a stopped process
        connector.deliver(make_package(tmp_path, "INV-T3"))
        assert connector.connects == 2


def test_deliver_batch_uses_a_small_pool_and_keeps_errors_per_document(sftp_harness, tmp_path):
    locked = sftp_harness.root / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    packages = [make_package(tmp_path, f"INV-B{i:02d}", pdf_size=20_000) for i in range(12)]
    packages[5] = make_package(tmp_path, "INV-B05", folder="locked/x")
    with sftp_harness.connection(pool_size=3).connector() as connector:
        results = connector.deliver_batch(packages)
        assert 1 < connector.connects <= 3
    assert isinstance(results[5], PermanentDeliveryError) and "INV-B05" in str(results[5])
    for i, (p, r) in enumerate(zip(packages, results)):
        if i != 5:
            assert r.remote_ref.endswith(p.main.name)
            assert sftp_harness.received(p, p.main) == p.main.open().read()


def test_label_and_block_fields_hold_no_secret(sftp_harness):
    conn: SftpConnection = sftp_harness.connection(private_key="-----BEGIN KEY-----", private_key_passphrase="pp")
    label = conn.label()
    assert label == f"sftp docroute-test@127.0.0.1:{sftp_harness.server.port}{sftp_harness.root}"
    assert sftp_harness.server.password not in label and "pp" not in repr(conn.private_key_passphrase)
    for name, field in SftpConnection.model_fields.items():
        assert field.description, name
    assert isinstance(conn.connector(), SftpConnector)


# -- the sync flow over SFTP: a chunk's documents delivered in parallel ------------------------
def _sftp_integration(workspace, sftp_harness, pool_size=4, **overrides) -> str:
    """An integration of the workspace's inbox exporting to the harness's sshd (connection saved as a block)."""
    name = f"sftp-{workspace.tag}"
    sftp_harness.connection(pool_size=pool_size).save(name, overwrite=True)
    return workspace.integration(connection=f"sftp-connection/{name}", **overrides)


def _seed(workspace, n, prefix="INV"):
    from datetime import timedelta

    from tasks.sources.seed import write_document

    approved = datetime.now(timezone.utc) - timedelta(hours=1)
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    for doc_id in ids:
        write_document(workspace.inbox, doc_id, client="acme", approved_at=approved, pdf_size=30_000,
                       metadata={"number": doc_id, "supplier": "Globex"})
    old = time.time() - 60  # past the inbox's settle time
    for p in workspace.inbox.iterdir():
        os.utime(p, (old, old))
    return ids


def _sessions(server) -> tuple[int, int]:
    log = server.sftp_log()
    return log.count("session opened for local user"), log.count("session closed for local user")


def test_the_sync_flow_sends_a_chunk_in_parallel_and_records_each_document_once(workspace, sftp_harness):
    from flows.sync import SEND_CHUNK, sync

    assert SftpConnector.parallelism.fget(sftp_harness.connection(pool_size=3).connector()) == 3
    server = sftp_harness.server
    key = _sftp_integration(workspace, sftp_harness, pool_size=4)
    ids = _seed(workspace, 2 * SEND_CHUNK + 7)  # two full chunks and a short one
    logins, (opened, closed) = server.logins(), _sessions(server)
    result = sync(integration=key)

    folder = sftp_harness.root / "acme" / "invoice"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i}.pdf" for i in ids]  # no temp file left
    for i in ids:
        assert (folder / f"{i}.pdf").read_bytes() == (workspace.inbox / f"{i}.pdf").read_bytes()
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == ids
    ledger = workspace.ledger()
    assert {r["doc_id"]: r["status"] for r in ledger.rows(key)} == {i: "delivered" for i in ids}
    events = [e for e in ledger.events_of(key)]
    for kind in ("attempt", "delivered"):  # one attempt recorded before sending, one delivery after, per document
        assert sorted(e["doc_id"] for e in events if e["event"] == kind) == ids, kind
    assert all(r["sending_since"] is None for r in ledger.rows(key))
    # several connections were used at once, no more than the pool, and all were closed after the run
    used = server.logins() - logins
    assert 1 < used <= 4
    deadline = time.monotonic() + 10
    while _sessions(server) != (opened + used, closed + used):
        assert time.monotonic() < deadline, _sessions(server)
        time.sleep(0.05)

    again = sync(integration=key)  # nothing new: nothing sent twice
    sends = [e for e in ledger.events_of(key) if e["event"] in ("attempt", "delivered")]
    assert again["outcomes"] == [] and len(sends) == 2 * len(ids)


def test_one_failing_document_in_a_parallel_chunk_does_not_block_the_others(workspace, sftp_harness):
    from flows.sync import SyncFailed, sync

    key = _sftp_integration(workspace, sftp_harness, pool_size=4, max_attempts=3)
    ids = _seed(workspace, 30)
    folder = sftp_harness.server.mkdir(f"{sftp_harness.root.name}/acme/invoice")
    (folder / "INV-0007.pdf").mkdir()  # a folder where the file should go: the server refuses the rename
    with pytest.raises(SyncFailed) as info:
        sync(integration=key)
    assert "1 of 30 documents failed" in str(info.value) and "INV-0007" in str(info.value)
    good = [i for i in ids if i != "INV-0007"]
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [f"{i}.pdf" for i in good]
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".partial")]
    rows = {r["doc_id"]: r for r in workspace.ledger().rows(key)}
    assert {d: r["status"] for d, r in rows.items() if d != "INV-0007"} == {i: "delivered" for i in good}
    assert rows["INV-0007"]["status"] == "failed" and rows["INV-0007"]["attempts"] == 1
    assert "INV-0007" in rows["INV-0007"]["last_error"]

    (folder / "INV-0007.pdf").rmdir()  # fixed: the next run delivers it, and only it
    result = sync(integration=key)
    assert [(o["doc_id"], o["status"]) for o in result["outcomes"]] == [("INV-0007", "delivered")]


def test_throttle_holds_when_documents_are_sent_in_parallel(workspace, sftp_harness):
    from flows.sync import sync

    key = _sftp_integration(workspace, sftp_harness, pool_size=4, throttle_per_second=20)
    ids = _seed(workspace, 21)
    sync(integration=key)
    folder = sftp_harness.root / "acme" / "invoice"
    times = sorted((folder / f"{i}.pdf").stat().st_mtime for i in ids)
    assert times[-1] - times[0] >= 0.9  # 21 documents at 20 a second take at least one second, 4 senders or not


def test_overwrite_sends_no_stat_and_pipelines_each_file(sftp_harness, tmp_path):
    """if_exists=overwrite needs no existence check; the close goes with the writes, then the rename."""
    server = sftp_harness.server
    package = make_package(tmp_path, "INV-P1")
    with sftp_harness.connection(if_exists="overwrite").connector() as connector:
        connector.deliver(package)  # creates the folder (its stats are not what this test looks at)
        mark = len(server.sftp_log())
        connector.deliver(package)
    requests = _requests_since(server, mark)
    target = sftp_harness.root / package.path_of(package.main)
    assert f'stat name "{target}"' not in requests and f'lstat name "{target}"' not in requests
    assert f'posix-rename old "{target.parent}/.INV-P1.pdf.' in requests
    assert target.read_bytes() == package.main.open().read()
    assert sftp_harness.leftovers(package) == []


# -- pipelined exchanges (deliver_many) -------------------------------------------------------
def _order(requests: str, pattern: str) -> list[int]:
    return [m.start() for m in re.finditer(pattern, requests)]


def test_deliver_many_sends_a_group_in_three_rounds_with_each_trigger_file_last(sftp_harness, tmp_path):
    server = sftp_harness.server
    packages = [make_package(tmp_path, f"INV-G{i}", pdf_size=40_000) for i in range(4)]
    with sftp_harness.connection(if_exists="overwrite").connector() as connector:
        connector.deliver(make_package(tmp_path, "INV-G-first"))  # creates the folder
        mark = len(server.sftp_log())
        results = connector.deliver_many(packages)
        assert connector.connects == 1
    requests = _requests_since(server, mark)
    opens, writes = _order(requests, r"(?m)^open "), _order(requests, r" write ")
    closes, renames = _order(requests, r"(?m)^close "), _order(requests, r"(?m)^posix-rename ")
    n = sum(len(p.files) for p in packages)
    assert len(opens) == len(closes) == len(renames) == n
    # round 1 (every open) before round 2 (writes, closes) before round 3 (renames)
    assert max(opens) < min(writes) and max(closes) < min(renames)
    # renames go document first: every package's PDF, then every XML, then every JSON trigger file
    kinds = re.findall(r'posix-rename old "[^"]*" new "[^"]*\.(pdf|xml|json)"', requests)
    assert kinds == ["pdf"] * 4 + ["xml"] * 4 + ["json"] * 4
    for p, r in zip(packages, results):
        assert r.remote_ref.endswith(f"/{p.main.name}")
        for f in p.files:
            assert sftp_harness.received(p, f) == f.open().read()


def test_one_refused_request_fails_only_its_package_in_an_exchange(sftp_harness, tmp_path):
    root = sftp_harness.root
    (root / "locked").mkdir()
    (root / "locked").chmod(0o555)  # the temp file cannot be created: open refused
    packages = [make_package(tmp_path, f"INV-M{i}", pdf_size=30_000) for i in range(6)]
    packages[1] = make_package(tmp_path, "INV-M1", folder="locked")
    sftp_harness.server.mkdir(f"{root.name}/{packages[3].folder}/INV-M3.pdf")  # the rename of its PDF is refused
    with sftp_harness.connection(if_exists="skip_identical").connector() as connector:
        connector.deliver(packages[4])  # already there and identical: skipped
        results = connector.deliver_many(packages)
        assert connector.connects == 1  # refusals are answers, not connection failures: still one connection
        assert connector.transport.is_active()
    assert isinstance(results[1], PermanentDeliveryError)
    assert "INV-M1" in str(results[1]) and "permission denied" in str(results[1]) and str(root / "locked") in str(results[1])
    assert isinstance(results[3], PermanentDeliveryError) and "INV-M3" in str(results[3])
    assert not (root / packages[3].folder / "INV-M3.json").exists()  # its trigger file never got its name
    assert results[4].already_present and not results[0].already_present
    for i in (0, 2, 4, 5):
        for f in packages[i].files:
            assert sftp_harness.received(packages[i], f) == f.open().read(), (i, f.name)
    leftovers = [p.name for p in root.rglob("*.partial")]
    assert leftovers == []  # temp files of the refused packages and of the skipped one are gone


def test_a_connection_killed_mid_exchange_fails_every_unfinished_package_as_transient(sftp_harness, tmp_path):
    with sftp_harness.connection().connector() as connector:
        connector.deliver(make_package(tmp_path, "INV-X0"))
        pids = _session_pids(connector.transport.sock.getsockname()[1])
        packages = [make_package(tmp_path, f"INV-X{i}", pdf_size=200_000) for i in range(1, 5)]
        source = tmp_path / f"src-INV-X3-{packages[2].main.name}"
        packages[2].files[0] = dataclasses.replace(packages[2].main, opener=lambda: _KillingStream(source, lambda: _kill(pids)))
        results = connector.deliver_many(packages)
        for p, r in zip(packages, results):
            assert isinstance(r, TransientDeliveryError), p.doc_id
            assert p.doc_id in str(r) and "reconnect" in str(r)
            assert sftp_harness.received(p, p.main) is None  # killed before any rename
        packages[2].files[0] = dataclasses.replace(packages[2].main, opener=lambda: source.open("rb"))
        for p in packages:
            connector.remove_partial(p)  # what the retry does first
        again = connector.deliver_many(packages)
        assert connector.connects == 2
    assert all(not isinstance(r, Exception) for r in again)
    for p in packages:
        for f in p.files:
            assert sftp_harness.received(p, f) == f.open().read()
        assert sftp_harness.leftovers(p) == []


def test_the_sync_flow_sends_each_chunk_as_one_pipelined_exchange(workspace, sftp_harness):
    from flows.sync import sync

    server = sftp_harness.server
    key = _sftp_integration(workspace, sftp_harness, pool_size=1)
    ids = _seed(workspace, 20)
    sync(integration=key, document_ids=ids[:1])  # creates the folder
    mark = len(server.sftp_log())
    sync(integration=key)
    requests = _requests_since(server, mark)
    opens, writes = _order(requests, r"(?m)^open "), _order(requests, r" write ")
    assert len(opens) == 19 and max(opens) < min(writes)  # every document opened before the first byte is written
    folder = sftp_harness.root / "acme" / "invoice"
    assert sorted(p.name for p in folder.iterdir()) == [f"{i}.pdf" for i in ids]


# -- path traversal ------------------------------------------------------------------------------
def test_a_folder_or_file_name_that_escapes_the_base_folder_is_refused_alone(sftp_harness, tmp_path):
    """The connector's last line of defence (mapping sanitises names first): nothing outside base_folder."""
    outside = sftp_harness.root.parent
    before = sorted(p.name for p in outside.iterdir())
    packages = [
        make_package(tmp_path, "INV-E1", folder="../escaped"),
        make_package(tmp_path, "INV-E2", folder="/tmp/docroute-escaped"),
        make_package(tmp_path, "INV-E3", folder="a/../../escaped"),
        make_package(tmp_path, "INV-E4"),
        make_package(tmp_path, "INV-E5"),
    ]
    packages[3].files[0] = dataclasses.replace(packages[3].main, name="../INV-E4.pdf")
    with sftp_harness.connection().connector() as connector:
        results = connector.deliver_many(packages)
    for p, r in zip(packages[:4], results):
        assert isinstance(r, PermanentDeliveryError) and p.doc_id in str(r), r
        assert "escapes" in str(r) or "bad file name" in str(r)
    assert sftp_harness.received(packages[4], packages[4].main) == packages[4].main.open().read()
    assert sorted(p.name for p in outside.iterdir()) == before
    assert not Path("/tmp/docroute-escaped").exists()


def test_traversal_in_supplier_and_number_stays_under_the_base_folder_over_sftp(workspace, sftp_harness):
    from datetime import timedelta

    from flows.sync import sync
    from tasks.sources.seed import write_document
    from tests.test_bad_input import EVIL

    key = _sftp_integration(workspace, sftp_harness, pool_size=2,
                            mapping={"folder": "{supplier}/{number}", "filename": "{number}_{doc_id}.{ext}", "sidecar": True})
    approved = datetime.now(timezone.utc) - timedelta(hours=1)
    ids = [f"EVIL-{i}" for i in range(len(EVIL))]
    for doc_id, value in zip(ids, EVIL):
        write_document(workspace.inbox, doc_id, client="acme", approved_at=approved, pdf_size=2_000,
                       metadata={"number": value, "supplier": value})
    old = time.time() - 60
    for p in workspace.inbox.iterdir():
        os.utime(p, (old, old))
    outside = sftp_harness.root.parent
    before = sorted(p.name for p in outside.iterdir())
    result = sync(integration=key)
    assert sorted(o["doc_id"] for o in result["outcomes"] if o["status"] == "delivered") == sorted(ids)
    files = [p for p in sftp_harness.root.rglob("*") if p.is_file()]
    assert len(files) == 2 * len(ids)  # a PDF and a sidecar each, nothing else
    for p in files:
        rel = p.relative_to(sftp_harness.root)
        assert len(rel.parts) == 3, rel  # {supplier}/{number}/file: a value never adds or removes a level
        assert all(seg not in (".", "..") and not seg.startswith(".") for seg in rel.parts), rel
    assert sorted(p.name for p in outside.iterdir()) == before
    assert not Path("/tmp/docroute-escaped").exists()
