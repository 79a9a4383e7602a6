"""IDM + ION as one integration, through the sync flow on a real Prefect server, against the local ION API
gateway: blocks saved on the server (the infor-ionapi block nested in the connection, its token shared),
mapping files in the workspace's mappings/, `docroute validate` on them, `docroute connect --ionapi`
and `--revoke`, the run's table saying "published to ION"."""

from __future__ import annotations

import json

import pytest
import yaml

from blocks.infor import InforIdmConnection, InforIdmIonConnection, InforIonApiConnection
from deployments.config import ConfigError, load_config
from flows.cli import main as cli
from flows.sync import sync
from tasks.connectors.infor_ion import PUBLISHED
from tasks.ledger import DELIVERED
from tasks.registry import load_block
from tests.conftest import confirmations
from tests.fakes.base import Fault
from tests.fakes.infor_gateway import InforGateway
from tests.test_infor import BOD_MAPPING, IDM_MAPPING
from tests.test_sync_flow import seed


@pytest.fixture
def gateway():
    gw = InforGateway("ACME_TST").start()
    yield gw
    gw.stop()


def save_blocks(ws, gw, cls=InforIdmIonConnection, **settings) -> str:
    """The tenant's infor-ionapi block, saved on its own, nested in a connection block; returns its reference."""
    InforIonApiConnection.from_ionapi(gw.ionapi()).save(f"acme-{ws.tag}", overwrite=True)
    block = cls(ionapi=InforIonApiConnection.load(f"acme-{ws.tag}"), timeout=10, after_timeout_wait=0.05, **settings)
    block.save(f"acme-{ws.tag}", overwrite=True)
    return f"{block.get_block_type_slug()}/acme-{ws.tag}"


def write_mappings(ws, idm=IDM_MAPPING, bod=BOD_MAPPING) -> dict[str, str]:
    folder = ws.config_dir / "mappings"
    folder.mkdir(exist_ok=True)
    (folder / "acme-idm.yaml").write_text(yaml.safe_dump(idm, sort_keys=False))
    (folder / "acme-bod.yaml").write_text(yaml.safe_dump(bod, sort_keys=False))
    return {"idm_mapping": "acme-idm.yaml", "bod_mapping": "acme-bod.yaml"}


def infor_integration(ws, gw, **overrides) -> str:
    ref = save_blocks(ws, gw, accounting_entity="infor.ln.100")
    spec = {"connection": ref, "connection_options": write_mappings(ws), "filters": {"document_types": ["invoice"]},
            "identifiers": {"company": "100"}, **overrides}
    return ws.integration("to-infor", **spec)


def test_idm_and_ion_as_one_integration_publish_one_item_and_one_bod_per_document(workspace, gateway):
    key = infor_integration(workspace, gateway)
    ids = seed(workspace, 4)
    result = sync(integration=key)
    outcomes = {o["doc_id"]: o for o in result["outcomes"]}
    assert {i: o["status"] for i, o in outcomes.items()} == {i: "delivered" for i in ids}
    rows = {r["doc_id"]: r for r in workspace.ledger().rows(key)}
    for doc_id in ids:
        (item,) = [i for i in gateway.items if i.attrs["SupplierInvoiceNumber"] == doc_id]
        key_attr = item.attrs["BOD_AlternateDocumentID_1"]
        bod = gateway.bods[key_attr]  # the BOD's message id is the item's correlation id
        assert bod.fields()["IDMItemPID"] == item.pid and bod.fields()["InvoiceNumber"] == doc_id
        assert item.resources[f"INV_{doc_id}.pdf"] == (workspace.inbox / f"{doc_id}.pdf").read_bytes()
        # the run's table and the ledger say what ION confirmed: published
        assert outcomes[doc_id]["remote"] == f"IDM {item.pid}; {PUBLISHED}: SyncCaptureDocument message {key_attr}"
        assert rows[doc_id]["status"] == DELIVERED and PUBLISHED in rows[doc_id]["remote_ref"]
    assert len(gateway.items) == len(gateway.bods) == 4
    assert gateway.grants["password"] == 1  # one token for the run, saved in the infor-ionapi block
    stored = InforIonApiConnection.load(f"acme-{workspace.tag}")
    assert stored.access_token is not None and stored.expires_at is not None


def test_a_bod_that_fails_after_the_upload_is_sent_by_the_next_run_reusing_the_item(workspace, gateway):
    key = infor_integration(workspace, gateway)
    (doc_id,) = seed(workspace, 1)
    gateway.fault(Fault(status=400, body=b'{"status": "Error", "message": "no route for this BOD"}',
                        headers={"Content-Type": "application/json"}, match="multipartMessage"))
    first = sync(integration=key, return_state=True)
    assert first.is_failed() and "no route for this BOD" in first.message
    assert len(gateway.items) == 1 and gateway.bods == {}
    again = sync(integration=key)
    assert [o["status"] for o in again["outcomes"]] == ["delivered"]
    assert gateway.upload_requests() == 1 and len(gateway.items) == 1  # found by lookup, not uploaded twice
    (bod,) = gateway.bods.values()
    assert bod.fields()["IDMItemPID"] == gateway.items[0].pid
    assert confirmations(workspace, key) == {doc_id: 1}


def test_an_unknown_idm_attribute_stops_the_run_before_any_document_is_sent(workspace, gateway):
    key = infor_integration(workspace, gateway)
    write_mappings(workspace, idm={**IDM_MAPPING, "attributes": {"SupplierInvoiceNo": "{number}"}})
    seed(workspace, 2)
    state = sync(integration=key, return_state=True)
    assert state.is_failed()
    assert "'SupplierInvoiceNo' is not an attribute of entity LN_SupplierInvoice" in state.message
    assert gateway.upload_requests() == 0 and gateway.bod_requests() == 0
    assert {r["status"] for r in workspace.ledger().rows(key)} <= {"pending"}  # none failed or parked for it


def test_docroute_check_lists_the_entity_s_attributes(workspace, gateway, capsys):
    key = infor_integration(workspace, gateway)
    ref = load_config(only=key).get(key).connection
    assert cli(["check", ref]) == 0
    out = capsys.readouterr().out
    assert "ION messaging answered the ping" in out
    assert "LN_SupplierInvoice has attributes MDS_EntityType, MDS_AccountingEntity, SupplierInvoiceNumber" in out


def test_two_connections_of_one_tenant_share_its_token(workspace, gateway, tmp_path):
    from tests.connectors.conformance import make_package

    InforIonApiConnection.from_ionapi(gateway.ionapi()).save(f"shared-{workspace.tag}", overwrite=True)
    for n in (1, 2):
        InforIdmConnection(ionapi=InforIonApiConnection.load(f"shared-{workspace.tag}"), timeout=10).save(
            f"idm{n}-{workspace.tag}", overwrite=True)
    for n in (1, 2):
        block = load_block(f"infor-idm-connection/idm{n}-{workspace.tag}")
        with block.connector() as conn:
            conn.deliver(make_package(tmp_path, f"INV-{n}"))
    assert gateway.grants["password"] == 1 and len(gateway.items) == 2


def test_connect_from_an_ionapi_file_prints_none_of_it_and_revoke_clears_the_token(workspace, gateway, tmp_path, capsys):
    data = gateway.ionapi()
    path = tmp_path / "tenant.ionapi"
    path.write_text(json.dumps(data))
    ref = f"infor-ionapi/cli-{workspace.tag}"
    assert cli(["connect", ref, "--ionapi", str(path)]) == 0
    out = capsys.readouterr()
    for key in ("ti", "ci", "cs", "iu", "pu", "saak", "sask"):
        assert data[key] not in out.out + out.err, key
    assert data["saak"].split("#", 1)[1] not in out.out + out.err
    assert "tokens saved" in out.out
    block = InforIonApiConnection.load(f"cli-{workspace.tag}")
    assert block.ti == "ACME_TST" and block.saak.get_secret_value() == data["saak"] and block.or_ == "revoke_token.oauth2"
    token = block.access_token.get_secret_value()
    assert gateway.tokens[token] > 0
    assert cli(["connect", ref, "--revoke"]) == 0
    assert token in gateway.revoked and gateway.tokens[token] == 0.0
    assert InforIonApiConnection.load(f"cli-{workspace.tag}").access_token is None
    # a file that is not an .ionapi: a clear error, nothing of it printed
    path.write_text('{"ti": "ACME_TST", "cs": "leaked-if-printed"}')
    assert cli(["connect", ref, "--ionapi", str(path)]) == 2
    err = capsys.readouterr().err
    assert "lacks ci, iu, pu, saak, sask" in err and "leaked-if-printed" not in err


def test_validate_names_the_mapping_file_field_and_fix(workspace, gateway):
    key = infor_integration(workspace, gateway)
    load_config(only=key)  # valid as written
    write_mappings(
        workspace,
        idm={**IDM_MAPPING, "entities": {"credit_note": "LN_SupplierInvoice"}, "attributes": {"SupplierName": "{vendor}"}},
        bod={**BOD_MAPPING, "fields": {"Total": "{total}"}, "confirmation": "OnError", "xslt": "missing.xsl"},
    )
    with pytest.raises(ConfigError) as info:
        load_config(only=key)
    problems = info.value.problems
    where = f"{workspace.config_dir / 'clients' / 'acme.yaml'}: integration 'to-infor': connection_options"
    idm_path, bod_path = workspace.config_dir / "mappings" / "acme-idm.yaml", workspace.config_dir / "mappings" / "acme-bod.yaml"
    assert f"{where}.idm_mapping: {idm_path}: attributes.SupplierName: unknown placeholder {{vendor}}" in "\n".join(problems)
    assert any(p.startswith(f"{where}.idm_mapping: {idm_path}: entities: no IDM entity for document type 'invoice'")
               for p in problems)
    assert f"{where}.bod_mapping: {bod_path}: confirmation: unknown field; remove it or check its spelling" in problems
    write_mappings(workspace, bod={**BOD_MAPPING, "kind": "idm"})
    with pytest.raises(ConfigError, match="kind: 'idm' where a BOD mapping is expected"):
        load_config(only=key)
    write_mappings(workspace, bod={**BOD_MAPPING, "xslt": "missing.xsl"})
    with pytest.raises(ConfigError, match=r"bod_mapping: .*acme-bod.yaml: xslt: stylesheet .*missing.xsl cannot be read"):
        load_config(only=key)
    (workspace.config_dir / "mappings" / "acme-idm.yaml").unlink()
    with pytest.raises(ConfigError, match=r"idm_mapping: .*acme-idm.yaml: cannot read the IDM mapping file"):
        load_config(only=key)
