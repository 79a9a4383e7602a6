"""Every connector runs this one suite against its real server.

Adding a connector: write tests/connectors/harness_<name>.py with a fixture
returning a Harness, and add the fixture's name below. One line.
"""

from __future__ import annotations

import dataclasses

import pytest

from tasks.connectors.base import Ability, CredentialsRefusedError, DeliveryError, PermanentDeliveryError, TransientDeliveryError
from tests.connectors.conformance import FailingStream, make_package

HARNESSES = [
    "local_folder_harness",
    "webhook_harness",
    "email_harness",
    "s3_harness",
    "sftp_harness",
    "infor_idm_harness",
    "infor_ion_harness",
    "dropbox_harness",
    "onedrive_harness",
    "gdrive_harness",
    "smb_harness",
    "smb_sealed_harness",
    "access_point_harness",
    "exact_online_harness",
    "debitoor_harness",
]


@pytest.fixture(params=HARNESSES)
def harness(request):
    return request.getfixturevalue(request.param)


def package_of(harness):
    """The harness's own packages where its destination takes only some files (an access point: the PDF inside
    the UBL invoice; Debitoor: one file per expense); the suite's realistic package everywhere else."""
    return getattr(harness, "make_package", make_package)


@pytest.fixture
def connector(harness):
    with harness.connection().connector() as conn:
        yield conn


def test_check_passes_against_the_real_server(connector):
    result = connector.check()
    assert result.ok, result.message


def test_delivers_every_file_byte_for_byte(harness, connector, tmp_path):
    package = package_of(harness)(tmp_path)
    delivery = connector.deliver(package)
    assert delivery.remote_ref
    assert not delivery.already_present
    for f in package.files:
        assert harness.received(package, f) == f.open().read(), f.name
    assert harness.leftovers(package) == []


def test_delivering_the_same_package_again_leaves_one_copy(harness, connector, tmp_path):
    package = package_of(harness)(tmp_path, "INV-2002")
    connector.deliver(package)
    connector.deliver(package)  # a retry after a crash between send and record
    assert harness.copies(package) == 1
    assert harness.received(package, package.main) == package.main.open().read()


def test_idempotency_lookup_finds_only_delivered_packages(harness, connector, tmp_path):
    if Ability.IDEMPOTENCY_LOOKUP not in connector.abilities:
        pytest.skip("connector has no idempotency lookup")
    package = package_of(harness)(tmp_path, "INV-3003")
    assert connector.lookup(package) is None
    connector.deliver(package)
    found = connector.lookup(package)
    assert found is not None and found.already_present


def test_inventory_lists_delivered_files_under_their_paths_and_refs(harness, connector, tmp_path):
    if Ability.INVENTORY not in connector.abilities:
        pytest.skip("connector cannot list its destination")
    package = package_of(harness)(tmp_path, "INV-3103", pdf_size=1000)
    delivery = connector.deliver(package)
    written = connector.files_written(package)  # S3 with metadata in headers: no sidecar
    listed = {f.path: f for f in connector.inventory(package.folder, hashes=True)}
    assert set(listed) == {package.path_of(f) for f in written}
    for f in written:
        entry = listed[package.path_of(f)]
        assert entry.size == f.size and not entry.partial and entry.sha256 in (None, f.sha256)
    assert listed[package.path_of(package.main)].ref == delivery.remote_ref  # how reconcile matches the ledger


def test_a_source_that_breaks_mid_file_leaves_nothing_under_the_final_name(harness, connector, tmp_path):
    package = package_of(harness)(tmp_path, "INV-4004", pdf_size=300_000)
    main = package.main
    source_path = tmp_path / f"src-{package.doc_id}-{main.name}"
    package.files[0] = dataclasses.replace(main, opener=lambda: FailingStream(source_path, 100_000))
    with pytest.raises(TransientDeliveryError) as info:
        connector.deliver(package)
    assert package.doc_id in str(info.value)
    assert harness.received(package, main) is None
    assert harness.received(package, package.files[-1]) is None  # the trigger file never went
    assert harness.leftovers(package) == []


def test_content_that_changed_since_it_was_hashed_is_refused(harness, connector, tmp_path):
    package = package_of(harness)(tmp_path, "INV-5005")
    main = package.main
    package.files[0] = dataclasses.replace(main, sha256="0" * 64)
    with pytest.raises(DeliveryError) as info:
        connector.deliver(package)
    assert "INV-5005" in str(info.value)
    assert harness.received(package, main) is None
    assert harness.leftovers(package) == []


def test_wrong_credentials_are_a_clear_permanent_error_without_the_secret(harness, tmp_path):
    bad = harness.bad_credentials()
    if bad is None:
        pytest.skip("connection has no credentials")
    connector = bad.connector()
    texts = []
    try:
        with connector:
            result = connector.check()
            assert not result.ok
            texts.append(result.message)
            with pytest.raises(PermanentDeliveryError) as info:
                connector.deliver(package_of(harness)(tmp_path, "INV-6006"))
            texts.append(str(info.value))
            # a refusal of the credentials, not of the document: the sync flow stops sending and parks nothing
            assert isinstance(info.value, CredentialsRefusedError), info.value
    except PermanentDeliveryError as exc:  # refused while connecting
        assert isinstance(exc, CredentialsRefusedError), exc
        texts.append(str(exc))
    assert texts
    for text in texts:
        assert connector.label in text
        for secret in harness.secrets:
            assert secret not in text


def test_deliver_many_keeps_each_package_s_result_in_order(harness, connector, tmp_path):
    """Several packages at once (pipelined where the connector can): a bad one fails alone."""
    packages = [package_of(harness)(tmp_path, f"INV-70{i:02d}", pdf_size=20_000) for i in range(5)]
    packages[1].files[0] = dataclasses.replace(packages[1].main, sha256="0" * 64)  # changed since hashed
    source = tmp_path / f"src-INV-7003-{packages[3].main.name}"
    packages[3].files[0] = dataclasses.replace(packages[3].main, opener=lambda: FailingStream(source, 10_000))
    results = connector.deliver_many(packages)
    assert len(results) == len(packages)
    for i in (1, 3):
        assert isinstance(results[i], DeliveryError) and packages[i].doc_id in str(results[i])
        assert harness.received(packages[i], packages[i].main) is None
        assert harness.received(packages[i], packages[i].files[-1]) is None  # its trigger file never went
    assert isinstance(results[3], TransientDeliveryError)
    for i in (0, 2, 4):
        assert results[i].remote_ref and not results[i].already_present
        for f in packages[i].files:
            assert harness.received(packages[i], f) == f.open().read(), (i, f.name)
    for p in packages:
        assert harness.leftovers(p) == []
