"""Hardening (issue 12), through the flows on real servers: nothing exported from outside the inbox, no
silent overwrite at a destination, no document silently ignored, one client's broken file stops
only that client, late approvals older than the lookback, version regressions, clear messages.
(The spoofing-character rule is tested per character class in tests/test_mapping.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from datetime import datetime, timedelta, timezone
from pathlib import Path


from flows.checks import check_connections
from flows.cli import main as cli
from flows.status import integration_status, unclaimed_key
from flows.sync import sync
from tasks.ledger import DELIVERED, FAILED, NEEDS_ATTENTION
from tasks.sources.seed import pdf_bytes, write_document
from tests.conftest import opened_files
from tests.sources.harness_sftp_inbox import SftpInboxHarness

ROOT = Path(__file__).resolve().parent.parent
HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


def outcomes(result) -> dict[str, str]:
    return {o["doc_id"]: o["status"] for o in result["outcomes"]}


def run_artifact(flow_run_id, key: str) -> list[dict]:
    """The table of the artifact `key` that one flow run created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                      flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    assert len(found) == 1, found
    data = found[0].data
    return json.loads(data) if isinstance(data, str) else data


def failure(state) -> str:
    assert state.is_failed(), state
    return state.message


# -- 1. symbolic links --------------------------------------------------------------------------------


def test_a_file_that_is_a_symbolic_link_out_of_the_inbox_is_never_read(workspace, tmp_path):
    secret = tmp_path / "outside" / "payroll.pdf"
    secret.parent.mkdir()
    secret.write_bytes(pdf_bytes("payroll: not for export"))
    key = workspace.integration()
    write_document(workspace.inbox, "LINK-PDF", client="acme", approved_at=HOUR_AGO)
    (workspace.inbox / "LINK-PDF.pdf").unlink()
    os.symlink(secret, workspace.inbox / "LINK-PDF.pdf")  # the PDF itself
    write_document(workspace.inbox, "LINK-XML", client="acme", approved_at=HOUR_AGO, xml=True)
    (workspace.inbox / "LINK-XML.xml").unlink()
    os.symlink(secret, workspace.inbox / "LINK-XML.xml")  # an extra file
    write_document(workspace.inbox, "PLAIN", client="acme", approved_at=HOUR_AGO)
    with opened_files() as opened:
        state = sync(integration=key, return_state=True)
    message = failure(state)
    assert "2 of 3 documents failed" in message
    for doc_id, name in (("LINK-PDF", "LINK-PDF.pdf"), ("LINK-XML", "LINK-XML.xml")):
        assert f"document {doc_id}: {name} in capture inbox {workspace.inbox} is a symbolic link" in message
        assert not list(workspace.out.rglob(f"{doc_id}*"))
    assert str(secret) not in opened and not any(p.endswith("payroll.pdf") for p in opened)  # nothing read through a link
    assert (workspace.out / "acme" / "invoice" / "PLAIN.pdf").exists()
    rows = {r.doc_id: r.status for r in workspace.ledger().rows(key)}
    assert rows["LINK-PDF"] == FAILED and rows["LINK-XML"] == FAILED and rows["PLAIN"] == DELIVERED


def test_a_symbolic_link_in_an_sftp_inbox_is_never_followed(workspace, sftp_server):
    harness = SftpInboxHarness(sftp_server, sftp_server.mkdir(f"inbox-{workspace.tag}"))
    outside = sftp_server.mkdir(f"private-{workspace.tag}") / "payroll.pdf"
    outside.write_bytes(pdf_bytes("payroll: not for export"))
    os.chown(outside, sftp_server.uid, sftp_server.gid)
    block = harness.block()
    block.save(f"inbox-{workspace.tag}", overwrite=True)
    key = workspace.integration(source=f"sftp-inbox/inbox-{workspace.tag}")
    harness.put("SFTP-LINK", approved_at=HOUR_AGO)
    harness.remove("SFTP-LINK.pdf")
    os.symlink(outside, harness.root / "SFTP-LINK.pdf")
    harness.put("SFTP-PLAIN", approved_at=HOUR_AGO)
    message = failure(sync(integration=key, return_state=True))
    assert "document SFTP-LINK: SFTP-LINK.pdf in sftp inbox" in message and "is a symbolic link" in message
    assert not list(workspace.out.rglob("SFTP-LINK*")) and (workspace.out / "acme" / "invoice" / "SFTP-PLAIN.pdf").exists()


# -- 2. no silent overwrite --------------------------------------------------------------------------------


def test_two_documents_mapped_to_one_path_the_second_fails_naming_both(workspace):
    key = workspace.integration(max_attempts=1, mapping={"folder": "{client}", "filename": "{supplier}.{ext}"})
    write_document(workspace.inbox, "OW-1", client="acme", approved_at=HOUR_AGO, metadata={"supplier": "Globex/BV"},
                   pdf=pdf_bytes("first"))
    write_document(workspace.inbox, "OW-2", client="acme", approved_at=HOUR_AGO, metadata={"supplier": "Globex_BV"},
                   pdf=pdf_bytes("second"))
    message = failure(sync(integration=key, return_state=True))
    assert "document OW-2: maps to acme/Globex_BV.pdf, which document OW-1 already holds" in message
    assert (workspace.out / "acme" / "Globex_BV.pdf").read_bytes() == pdf_bytes("first")  # never written over
    assert {r.doc_id: r.status for r in workspace.ledger().rows(key)} == {"OW-1": DELIVERED, "OW-2": NEEDS_ATTENTION}


def test_ids_that_differ_only_in_unicode_normalisation_never_overwrite_each_other(workspace):
    key = workspace.integration(max_attempts=1)  # the default {doc_id}.{ext}
    nfc, nfd = unicodedata.normalize("NFC", "Café-7"), unicodedata.normalize("NFD", "Café-7")
    assert nfc != nfd
    write_document(workspace.inbox, nfc, client="acme", approved_at=HOUR_AGO, pdf=pdf_bytes("composed"))
    write_document(workspace.inbox, nfd, client="acme", approved_at=HOUR_AGO, pdf=pdf_bytes("decomposed"))
    message = failure(sync(integration=key, return_state=True))
    assert "maps to acme/invoice/Café-7.pdf, which document" in unicodedata.normalize("NFC", message)
    delivered = list((workspace.out / "acme" / "invoice").iterdir())
    assert len(delivered) == 1 and delivered[0].read_bytes() in (pdf_bytes("composed"), pdf_bytes("decomposed"))


def test_validate_warns_when_no_placeholder_is_unique_per_document(workspace, capsys):
    workspace.integration(mapping={"folder": "{client}", "filename": "{supplier}_{number}.{ext}"})
    workspace.integration("with-id", mapping={"folder": "{client}/x", "filename": "{supplier}_{doc_id}.{ext}"})
    assert cli(["validate"]) == 0
    out = capsys.readouterr().out
    assert "integration 'invoices': mapping.filename: '{supplier}_{number}.{ext}'" in out and "add {doc_id}" in out
    assert "integration 'with-id'" not in out


# -- 3. documents nobody takes -----------------------------------------------------------------------------


def test_client_ids_are_compared_trimmed_and_case_folded_and_unclaimed_documents_are_reported(workspace):
    key = workspace.integration(filters={"document_types": ["invoice"]})
    write_document(workspace.inbox, "CASE-1", client="ACME", approved_at=HOUR_AGO)
    write_document(workspace.inbox, "CASE-2", client="acme ", approved_at=HOUR_AGO)
    write_document(workspace.inbox, "NOBODY-1", client="umbrella", approved_at=HOUR_AGO)
    write_document(workspace.inbox, "RECEIPT-1", client="acme", doc_type="receipt", approved_at=HOUR_AGO)
    write_document(workspace.inbox, "PENDING-1", client="umbrella", status="pending")
    assert outcomes(sync(integration=key)) == {"CASE-1": DELIVERED, "CASE-2": DELIVERED}
    rows = integration_status(client="acme")
    assert {r["integration"]: r["unclaimed in source"] for r in rows} == {key: 2}
    state = integration_status(return_state=True)  # every client: the artifact of the source
    assert state.is_completed()
    table = run_artifact(state.state_details.flow_run_id, unclaimed_key(workspace.source_ref))
    by_doc = {r["document"]: r["reason"] for r in table}
    assert set(by_doc) == {"NOBODY-1", "RECEIPT-1"}  # not the pending one: nothing is due yet
    assert "client 'umbrella' matches no integration reading" in by_doc["NOBODY-1"]
    assert "no integration of client acme takes it (type 'receipt'" in by_doc["RECEIPT-1"]
    assert cli(["status", "--client", "acme"]) == 0


# -- 4. late approvals older than the lookback --------------------------------------------------------------


def test_a_late_approval_older_than_the_lookback_is_delivered_by_a_scheduled_run(workspace, caplog):
    key = workspace.integration(lookback="1h")
    write_document(workspace.inbox, "ON-TIME", client="acme", approved_at=HOUR_AGO)
    sync(integration=key)
    late = datetime.now(timezone.utc) - timedelta(days=20)  # after activation, long before the window
    write_document(workspace.inbox, "LATE-20D", client="acme", approved_at=late)
    caplog.clear()
    assert outcomes(sync(integration=key)) == {"LATE-20D": DELIVERED}
    assert "document LATE-20D: approved" in caplog.text and "before this run's window" in caplog.text
    assert (workspace.out / "acme" / "invoice" / "LATE-20D.pdf").exists()


# -- 5. one client's broken file --------------------------------------------------------------------------


def test_one_clients_broken_file_stops_only_that_client(workspace, capsys):
    acme = workspace.integration()
    globex = workspace.integration(client="globex")
    write_document(workspace.inbox, "GLX-1", client="globex", approved_at=HOUR_AGO)
    write_document(workspace.inbox, "ACME-1", client="acme", approved_at=HOUR_AGO)
    (workspace.config_dir / "clients" / "acme.yaml").write_text("client: acme\nintegrations:\n  - name: [unclosed\n")
    assert outcomes(sync(integration=globex)) == {"GLX-1": DELIVERED}
    state = sync(integration=acme, return_state=True)
    assert state.is_failed() and "acme.yaml: cannot read YAML" in str(state.result(raise_on_failure=False))
    assert cli(["validate"]) == 2
    assert "acme.yaml: cannot read YAML" in capsys.readouterr().err
    env = workspace.env()
    out = subprocess.run([sys.executable, "-m", "flows.cli", "deploy"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1
    assert f"docroute-sync/{globex.replace('/', '-')}" in out.stdout  # the others are deployed
    assert "not deployed:" in out.stderr and "acme.yaml: cannot read YAML" in out.stderr and "acme" in out.stderr


# -- 7. version regression -----------------------------------------------------------------------------------


def test_a_source_that_goes_back_to_an_earlier_version_is_delivered_again(workspace):
    key = workspace.integration()
    target = workspace.out / "acme" / "invoice" / "REV-1.pdf"
    v1, v2 = pdf_bytes("version 1"), pdf_bytes("version 2, corrected")
    write_document(workspace.inbox, "REV-1", client="acme", approved_at=HOUR_AGO, pdf=v1)
    sync(integration=key)
    write_document(workspace.inbox, "REV-1", client="acme", approved_at=HOUR_AGO, pdf=v2)
    sync(integration=key)
    assert target.read_bytes() == v2
    write_document(workspace.inbox, "REV-1", client="acme", approved_at=HOUR_AGO, pdf=v1)  # the correction is undone
    assert outcomes(sync(integration=key)) == {"REV-1": DELIVERED}
    assert target.read_bytes() == v1  # the destination holds what the source holds
    assert outcomes(sync(integration=key)) == {}


# -- 8. messages ---------------------------------------------------------------------------------------------


def test_check_names_the_connection_block_an_ops_user_must_edit(workspace, sftp_server):
    from blocks.sftp import SftpConnection

    name = f"partner-{workspace.tag}"
    SftpConnection(host="127.0.0.1", port=sftp_server.port, username=sftp_server.user, password="wrong-password",
                   host_key=sftp_server.known_hosts_line, base_folder="/nowhere", connect_timeout=5).save(name)
    state = check_connections(connections=[f"sftp-connection/{name}"], return_state=True)
    assert state.is_failed() and f"sftp-connection/{name}: sftp {sftp_server.user}@127.0.0.1:{sftp_server.port}" in state.message


def test_validate_prints_no_prefect_warning_when_it_succeeds(workspace):
    workspace.integration()
    out = subprocess.run([sys.executable, "-m", "flows.cli", "validate"], env=workspace.env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OK: 1 integrations valid" in out.stdout
    assert "EventsWorker" not in out.stderr and "WARNING" not in out.stderr, out.stderr
