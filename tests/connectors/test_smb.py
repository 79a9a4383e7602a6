"""The SMB connector against Debian's Samba (tests/smbd.py): signing and encryption as the share
requires, the if_exists policies, verify=hash, temp files, the trigger file last."""

from __future__ import annotations

import os
import shutil
import uuid

import pytest

from tasks.connectors.base import CredentialsRefusedError, PermanentDeliveryError
from tests.connectors.conformance import make_package
from tests.connectors.harness_smb import smb_connection, smb_server


@pytest.fixture
def server():
    return smb_server()


@pytest.fixture
def root(server):
    path = server.mkdir("docs", f"out-{uuid.uuid4().hex[:8]}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sessions(connector):
    return [s for conn in connector.session.cache.values() for s in conn.session_table.values()]


def trees(connector):
    return [t for s in sessions(connector) for t in s.tree_connect_table.values()]


def test_messages_are_signed_and_a_share_that_requires_it_is_encrypted(server, root, tmp_path):
    sealed = server.mkdir("sealed", root.name)
    package = make_package(tmp_path, "ENC-1", with_xml=False)
    with smb_connection(server, root.name, "sealed").connector() as connector:
        connector.deliver(package)
        assert [t.encrypt_data for t in trees(connector)] == [True]  # the share said: encrypt (smb encrypt = required)
        assert all(s.signing_required for s in sessions(connector))
    assert (sealed / package.path_of(package.main)).read_bytes() == package.main.open().read()
    with smb_connection(server, root.name, "docs").connector() as connector:
        connector.deliver(package)
        assert [t.encrypt_data for t in trees(connector)] == [False]  # signed only: this share does not ask for more
        assert all(s.signing_required for s in sessions(connector))
    with smb_connection(server, root.name, "docs", encrypt=True).connector() as connector:
        connector.deliver(make_package(tmp_path, "ENC-2", with_xml=False))
        assert all(s.encrypt_data for s in sessions(connector))  # encryption asked for by the connection
    shutil.rmtree(sealed, ignore_errors=True)


def test_if_exists_policies_as_on_sftp(server, root, tmp_path):
    package = make_package(tmp_path, "POL-1", folder="", with_xml=False, with_sidecar=False)
    target = root / package.main.name
    target.write_bytes(b"%PDF-1.7\nother content\n")
    os.chown(target, server.uid, server.gid)
    with smb_connection(server, root.name, if_exists="fail").connector() as connector:
        with pytest.raises(PermanentDeliveryError, match="if_exists=fail"):
            connector.deliver(package)
    assert target.read_bytes() == b"%PDF-1.7\nother content\n"
    with smb_connection(server, root.name, if_exists="skip_identical").connector() as connector:
        assert not connector.deliver(package).already_present  # different: replaced
        assert connector.deliver(package).already_present  # identical: left alone
    assert target.read_bytes() == package.main.open().read()
    inode = target.stat().st_ino
    with smb_connection(server, root.name, if_exists="overwrite").connector() as connector:
        assert not connector.deliver(package).already_present  # always written again
    assert target.stat().st_ino != inode and target.read_bytes() == package.main.open().read()
    assert sorted(p.name for p in root.iterdir()) == [package.main.name]  # no temp file left


def test_verify_hash_compares_what_the_share_holds(server, root, tmp_path):
    package = make_package(tmp_path, "VH-1", folder="", with_xml=False, with_sidecar=False)
    target = root / package.main.name
    data = package.main.open().read()
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
    os.chown(target, server.uid, server.gid)
    with smb_connection(server, root.name, verify="size").connector() as connector:
        assert connector.deliver(package).already_present  # size alone cannot tell
    with smb_connection(server, root.name, verify="hash").connector() as connector:
        assert not connector.deliver(package).already_present
    assert target.read_bytes() == data


def test_files_are_renamed_into_place_in_package_order(server, root, tmp_path):
    package = make_package(tmp_path, "ORD-1", folder="", with_xml=True, with_sidecar=True)
    with smb_connection(server, root.name).connector() as connector:
        connector.deliver(package)
    times = [(root / f.name).stat().st_ctime_ns for f in package.files]
    assert times == sorted(times)  # document, attachment, then the sidecar (the trigger) last


def test_remove_partial_removes_what_a_broken_write_left(server, root, tmp_path):
    package = make_package(tmp_path, "PT-1", folder="", with_xml=False, with_sidecar=False)
    leftover = root / f".{package.main.name}.deadbeef.partial"
    leftover.write_bytes(b"half")
    os.chown(leftover, server.uid, server.gid)
    other = root / ".someone-else.partial"
    other.write_bytes(b"x")
    with smb_connection(server, root.name).connector() as connector:
        assert [f.path for f in connector.inventory() if f.partial] == sorted([leftover.name, other.name])
        connector.remove_partial(package)
    assert not leftover.exists() and other.exists()


def test_a_wrong_password_is_refused_credentials(server, root, tmp_path):
    with pytest.raises(CredentialsRefusedError) as info:
        with smb_connection(server, root.name, password="not-it").connector() as connector:
            connector.deliver(make_package(tmp_path, "PW-1"))
    assert "not-it" not in str(info.value) and server.password not in str(info.value)
