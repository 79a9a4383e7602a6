"""Infor ION connectors: a SyncCaptureDocument BOD per document through ION messaging v2, alone or after
an IDM upload (Docbits' "IDM + ION BOD").

    POST IONSERVICES/api/ion/messaging/service/v2/multipartMessage   (multipart/form-data)
      ParameterRequest  application/json   {documentName, messageId, fromLogicalId, toLogicalId, document:
                                             {encoding: NONE, characterSet: UTF-8}, documentId, accountingEntity}
      MessagePayload    application/octet-stream   the BOD XML

The BOD is built from the integration's BOD mapping file (connection_options: {bod_mapping: acme-bod.yaml},
deployments/infor.py): ApplicationArea (Sender/LogicalID = the connection's logical_id, ConfirmationCode,
CreationDateTime, BODID), DataArea/Sync (TenantID, AccountingEntityID, ActionCriteria/ActionExpression
@actionCode), and the CaptureDocument: DocumentID, AlternateDocumentID/ID with schemeName="CorrelationID"
(the idempotency key), DocumentType, one DocumentField (Name, Value, FieldOrderNumber, PageID) per index
field, one DocumentPage (PageID, SourceFileName, SourceMimeType) per file. ION alone: each page carries its
file as base64 (EmbeddedData), unless the mapping says embed_files: false. IDM + ION: a DocumentField
(idm_item_field) carries the IDM item's PID, the pages name the item's resources.

Before sending: the mapping's XSLT (if any) is applied, then the BOD must be well-formed XML and valid
against the mapping's XML schema, or, without one, hold every element ION needs, not empty.

Idempotency: messageId and BODID are the package's idempotency key, the same on every retry; the
assumption (docs/infor.md) is that ION's inbox discards a message id it already has, and the ERP can
tell a repeat by AlternateDocumentID/ID[@schemeName="CorrelationID"]. So 502/503/504 and cut
connections are retried by the HTTP layer (as inforion's client does), and a crash between send and
record sends the same message again. ION only confirms that the message was published, not that the
ERP processed it: the delivery says "published to ION" (run table, ledger), nothing more.

IDM + ION: the IDM item first (found by its correlation attribute or uploaded, tasks/connectors/infor_idm.py),
then the BOD. A BOD that fails after the upload fails the delivery; its retry finds the item by search
and sends only the BOD. check() is ION's ping (IONSERVICES/api/ion/messaging/service/ping; 200 means
provisioned), plus IDM's datamodel for IDM + ION.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from deployments.infor import (
    DEFAULT_BOD,
    BodMapping,
    MappingFileError,
    load_mapping,
    load_schema,
    mapping_problems,
)
from deployments.schema import Sanitize
from tasks.connectors.base import (
    CheckResult,
    Connector,
    ConnectorOptions,
    Delivery,
    DeliveryError,
    Package,
    PackageFile,
    PermanentDeliveryError,
    TransientDeliveryError,
    VerifyingReader,
)
from tasks.connectors.infor_gateway import Gateway
from tasks.connectors.infor_idm import (
    IdmClient,
    InforIdmOptions,
    check_entities,
    checked_clients,
    mappings_in_use,
    read_idm_mapping,
)
from tasks.settings import get_settings
from tasks.templates import MappingError, Renderer
from tasks.xslt import XsltError, compile_stylesheet, parse_xml, stylesheet_path

PING = "IONSERVICES/api/ion/messaging/service/ping"
MULTIPART = "IONSERVICES/api/ion/messaging/service/v2/multipartMessage"
PUBLISHED = "published to ION"
# What every SyncCaptureDocument must hold, not empty (checked when the mapping names no XML schema).
REQUIRED = (
    "ApplicationArea/Sender/LogicalID",
    "ApplicationArea/CreationDateTime",
    "ApplicationArea/BODID",
    "DataArea/Sync/AccountingEntityID",
    "DataArea/Sync/ActionCriteria/ActionExpression/@actionCode",
    "DataArea/CaptureDocument/DocumentID/ID",
    "DataArea/CaptureDocument/AlternateDocumentID/ID[@schemeName='CorrelationID']",
    "DataArea/CaptureDocument/DocumentType",
)


class InforIonOptions(ConnectorOptions):
    """connection_options of an ION integration."""

    bod_mapping: str | None = Field(
        default=None, description="BOD mapping file, in the config folder's mappings/, e.g. acme-bod.yaml."
    )

    def config_problems(self, config_dir: Path, where: str, known: set[str], document_types: list[str]) -> list[str]:
        """docroute validate: the mapping file (deployments/checks.py)."""
        if not self.bod_mapping:
            return []
        return mapping_problems(config_dir, self.bod_mapping, "bod", where, "bod_mapping", known, document_types)


class InforIdmIonOptions(InforIdmOptions, InforIonOptions):
    """connection_options of an IDM + ION integration: both mapping files."""

    def config_problems(self, config_dir: Path, where: str, known: set[str], document_types: list[str]) -> list[str]:
        return (InforIdmOptions.config_problems(self, config_dir, where, known, document_types)
                + InforIonOptions.config_problems(self, config_dir, where, known, document_types))


def read_bod_mapping(name: str | None) -> BodMapping:
    if not name:
        return DEFAULT_BOD
    try:
        mapping = load_mapping(get_settings().config_dir, name, "bod")
    except MappingFileError as exc:
        raise PermanentDeliveryError(f"BOD mapping {name}: {exc}") from None
    assert isinstance(mapping, BodMapping)
    return mapping


class IonClient:
    """ION messaging through a Gateway: build, check and publish a BOD; ping."""

    def __init__(self, gateway: Gateway, mapping: BodMapping, mapping_name: str | None, connection: Any):
        self.gateway = gateway
        self.mapping = mapping
        self.mapping_name = mapping_name or "(default)"
        self.connection = connection
        config_dir = get_settings().config_dir
        try:
            self.xslt = compile_stylesheet(stylesheet_path(config_dir, mapping.xslt)) if mapping.xslt else None
        except XsltError as exc:
            raise PermanentDeliveryError(f"{gateway.label}: BOD mapping {self.mapping_name}: xslt: {exc}") from None
        try:
            self.schema = load_schema(config_dir, mapping.schema_) if mapping.schema_ else None
        except MappingFileError as exc:
            raise PermanentDeliveryError(f"{gateway.label}: BOD mapping {self.mapping_name}: schema: {exc}") from None

    @property
    def label(self) -> str:
        return self.gateway.label

    def ping(self) -> str:
        response = self.gateway.request("GET", PING, what="ION ping")
        response.close()
        return f"ION messaging answered the ping ({response.status_code}): provisioned"

    # -- the BOD ------------------------------------------------------------------------------------
    def build(self, package: Package, idm_pid: str | None = None, idm_names: list[str] | None = None) -> bytes:
        """The BOD of a package (IDM + ION: with the item's PID and resource names, no file inside), after the
        mapping's XSLT, checked: PermanentError naming the document, the mapping and what is wrong."""
        from lxml import etree

        m = self.mapping
        key = package.idempotency_key
        renderer = Renderer(package.values, Sanitize(), package.doc_id)

        def text(template: str, field: str) -> str:
            try:
                return renderer.text(template, f"BOD mapping {self.mapping_name}: {field}")
            except MappingError as exc:
                raise PermanentDeliveryError(str(exc)) from None

        doc_type = m.document_type_for(package.document_type)
        if doc_type is None:
            raise PermanentDeliveryError(f"document {package.doc_id}: BOD mapping {self.mapping_name} has no DocumentType "
                                         f"for document type {package.document_type!r}; add it to document_types")
        entity = text(m.accounting_entity, "accounting_entity") if m.accounting_entity else (self.connection.accounting_entity or "")
        embed = m.embed_files and idm_pid is None
        files = list(package.files)
        if embed:
            estimate = sum(f.size for f in files) * 4 // 3 + 16_384
            if estimate > self.connection.max_message_bytes:
                raise PermanentDeliveryError(
                    f"document {package.doc_id}: its BOD with the files inside would be about {estimate} bytes, more than "
                    f"max_message_bytes ({self.connection.max_message_bytes}) of {self.label}; use an IDM + ION connection "
                    f"(the files go to IDM) or embed_files: false in the BOD mapping"
                )
        ns = m.namespace
        E = lambda tag, *children, **attrs: _el(ns, tag, children, attrs)
        fields = [(name, text(t, f"fields.{name}")) for name, t in m.fields.items()]
        if idm_pid is not None:
            fields.append((m.idm_item_field, idm_pid))
        pages = []
        names = idm_names or [f.name for f in files]
        for n, (f, name) in enumerate(zip(files, names), 1):
            page = [E("PageID", str(n)), E("SourceFileName", name), E("SourceMimeType", f.media_type)]
            if embed:
                page.append(E("EmbeddedData", self._base64(package, f), mimeCode=f.media_type, encodingCode="Base64",
                              filename=f.name))
            pages.append(E("DocumentPage", *page))
        root = E(
            m.document_name,
            E("ApplicationArea",
              E("Sender", E("LogicalID", self.connection.logical_id), E("ComponentID", "docroute"),
                E("ConfirmationCode", m.confirmation_code)),
              E("CreationDateTime", datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
              E("BODID", key)),
            E("DataArea",
              E("Sync", E("TenantID", self.gateway.ionapi.ti), E("AccountingEntityID", entity),
                E("ActionCriteria", E("ActionExpression", actionCode=m.action_code))),
              E("CaptureDocument",
                E("DocumentID", E("ID", package.doc_id)),
                E("AlternateDocumentID", E("ID", key, schemeName="CorrelationID", location=m.location)),
                E("DocumentType", doc_type),
                *[E("DocumentField", E("Name", name), E("Value", value), E("FieldOrderNumber", str(i)), E("PageID", "1"))
                  for i, (name, value) in enumerate(fields, 1)],
                *pages)),
            releaseID=m.release_id, versionID=m.version_id,
        )
        bod = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        if self.xslt is not None:
            try:
                bod = self.xslt.transform(bod, {"doc_id": package.doc_id, "correlation_id": key},
                                          what=f"the BOD of document {package.doc_id}")
            except XsltError as exc:
                raise PermanentDeliveryError(f"integration {package.integration!r}: BOD mapping {self.mapping_name}: {exc}") from None
        self.check_bod(bod, package)
        return bod

    def _base64(self, package: Package, f: PackageFile) -> str:
        try:
            with f.open() as src:
                reader = VerifyingReader(src, f)
                data = reader.read()
                reader.verify(package)
        except OSError as exc:
            raise TransientDeliveryError(
                f"document {package.doc_id}: cannot read source file {f.name} for {self.label}: {exc.strerror or exc}"
            ) from None
        return base64.b64encode(data).decode("ascii")

    def check_bod(self, bod: bytes, package: Package) -> None:
        """Well-formed, the mapping's document_name at the root, and valid (XML schema) or complete (REQUIRED)."""
        what = f"document {package.doc_id}: the BOD (mapping {self.mapping_name})"
        try:
            tree = parse_xml(bod, what)
        except XsltError as exc:
            raise PermanentDeliveryError(f"{exc}; nothing was sent") from None
        root = tree.getroot()
        from lxml import etree

        if etree.QName(root).localname != self.mapping.document_name:
            raise PermanentDeliveryError(f"{what}: its root is {etree.QName(root).localname}, not "
                                         f"{self.mapping.document_name}; nothing was sent")
        if self.schema is not None:
            if not self.schema.validate(tree):
                errors = "; ".join(f"line {e.line}: {e.message}" for e in list(self.schema.error_log)[:5])
                raise PermanentDeliveryError(f"{what} is not valid against {self.mapping.schema_}: {errors}; nothing was sent")
            return
        missing = [path for path in REQUIRED if not _present(root, path)]
        if missing:
            raise PermanentDeliveryError(f"{what} lacks {', '.join(missing)} (or they are empty); nothing was sent. "
                                         f"Set them in the BOD mapping or on the connection (accounting_entity)")

    # -- publishing ---------------------------------------------------------------------------------
    def publish(self, package: Package, bod: bytes) -> dict[str, Any]:
        """Send the BOD; returns what ION said. The message id is the idempotency key, so a repeat is the
        same message (retried by the HTTP layer on 429 and 5xx)."""
        if len(bod) > self.connection.max_message_bytes:
            raise PermanentDeliveryError(f"document {package.doc_id}: its BOD is {len(bod)} bytes, more than "
                                         f"max_message_bytes ({self.connection.max_message_bytes}) of {self.label}")
        m = self.mapping
        key = package.idempotency_key
        root_entity = _find_text(parse_xml(bod).getroot(), "DataArea/Sync/AccountingEntityID")
        parameters = {
            "documentName": m.document_name,
            "messageId": key,
            "fromLogicalId": self.connection.logical_id,
            "toLogicalId": self.connection.to_logical_id,
            "document": {"encoding": "NONE", "characterSet": "UTF-8"},
            "documentId": package.doc_id,
        }
        if root_entity:
            parameters["accountingEntity"] = root_entity
        what = f"document {package.doc_id}: ION message"
        files = {
            "ParameterRequest": (None, json.dumps(parameters), "application/json"),
            "MessagePayload": (f"{m.document_name}.xml", bod, "application/octet-stream"),
        }
        response = self.gateway.request("POST", MULTIPART, what=what, files=files, idempotent=True)
        try:
            body = self.gateway.read(response, what) if response.content.strip() else {}
        finally:
            response.close()
        status = str(body.get("status", "")).lower() if isinstance(body, dict) else ""
        if status and status not in ("success", "ok", "published"):
            raise PermanentDeliveryError(f"{what}: {self.label} answered {response.status_code} with status "
                                         f"{body.get('status')!r}: {body.get('message', '')}")
        said = str(body.get("message", "")) if isinstance(body, dict) else ""
        return {"document_name": m.document_name, "message_id": key, "published": True, "ion_status": response.status_code,
                "ion_message": said[:200], "bytes": len(bod)}


def _el(ns: str, tag: str, children: tuple, attrs: dict[str, str]) -> Any:
    from lxml import etree

    el = etree.Element(f"{{{ns}}}{tag}", nsmap={None: ns}) if ns else etree.Element(tag)
    for k, v in attrs.items():
        el.set(k, v)
    for child in children:
        if isinstance(child, str):
            el.text = child
        else:
            el.append(child)
    return el


def _find_text(root: Any, path: str) -> str:
    el = root.find("/".join(f"{{*}}{p}" for p in path.split("/")))
    return (el.text or "").strip() if el is not None else ""


def _present(root: Any, path: str) -> bool:
    """Whether `path` (element names, a last @attribute, or ID[@schemeName='x']) is there and not empty."""
    steps = path.split("/")
    attr = steps.pop()[1:] if steps[-1].startswith("@") else None
    parts = []
    for step in steps:
        name, _, cond = step.partition("[")
        parts.append(f"{{*}}{name}" + (f"[{cond}" if cond else ""))
    for el in root.findall("/".join(parts)):
        value = el.get(attr) if attr else el.text
        if value and value.strip():
            return True
    return False


def bod_mappings(ion: IonClient, connection: Any, option_value: str | None) -> str:
    """What a check says of the BOD mapping files in use: each reads, its stylesheet compiles, its schema parses."""
    names = [option_value] if option_value else mappings_in_use(connection, "bod_mapping")
    for name in names:
        IonClient(ion.gateway, read_bod_mapping(name), name, connection)  # raises naming what is wrong
    return f"; BOD mapping {', '.join(names)}: usable" if names else ""


def _delivery_ref(detail: dict[str, Any], pid: str | None = None) -> str:
    """What the run's table shows: what ION confirmed (published), and the IDM item where there is one."""
    published = f"{PUBLISHED}: {detail['document_name']} message {detail['message_id']}"
    return f"IDM {pid}; {published}" if pid else published


class InforIonConnector(Connector):
    """One SyncCaptureDocument BOD per document (module docstring): published to ION."""

    options_model = InforIonOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._ion: IonClient | None = None

    def _client(self) -> IonClient:
        if self._ion is None:
            self._ion = IonClient(Gateway(self.label, self.connection, self.mode),
                                  read_bod_mapping(self.options.bod_mapping), self.options.bod_mapping, self.connection)
        return self._ion

    def open(self) -> None:
        self._client()  # the mapping, its stylesheet and schema: a broken one stops the run before any document

    def close(self) -> None:
        if self._ion is not None:
            self._ion.gateway.close()
            self._ion = None

    def check(self) -> CheckResult:
        try:
            ion = self._client()
            said = f"{ion.ping()}{bod_mappings(ion, self.connection, self.options.bod_mapping)}"
        except DeliveryError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        return CheckResult(True, f"{self.label}: {said}")

    def deliver(self, package: Package) -> Delivery:
        ion = self._client()
        detail = ion.publish(package, ion.build(package))
        return Delivery(remote_ref=_delivery_ref(detail), detail=detail)


class InforIdmIonConnector(Connector):
    """IDM + ION: the item in IDM (found or uploaded), then a BOD carrying its PID (module docstring)."""

    options_model = InforIdmIonOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._idm: IdmClient | None = None
        self._ion: IonClient | None = None

    def _clients(self) -> tuple[IdmClient, IonClient]:
        if self._idm is None or self._ion is None:
            gateway = Gateway(self.label, self.connection, self.mode)  # one token, one HTTP client for both
            self._idm = IdmClient(gateway, read_idm_mapping(self.options.idm_mapping), self.options.idm_mapping, self.connection)
            self._ion = IonClient(gateway, read_bod_mapping(self.options.bod_mapping), self.options.bod_mapping, self.connection)
        return self._idm, self._ion

    def open(self) -> None:
        self._clients()[0].validate()

    def close(self) -> None:
        if self._idm is not None:
            self._idm.gateway.close()
        self._idm = self._ion = None

    def check(self) -> CheckResult:
        try:
            idm, ion = self._clients()
            entities = "; ".join(check_entities(c) for c in checked_clients(idm, self.connection, self.options.idm_mapping))
            said = f"{ion.ping()}{bod_mappings(ion, self.connection, self.options.bod_mapping)}; IDM: {entities}"
        except DeliveryError as exc:
            return CheckResult(False, str(exc) if self.label in str(exc) else f"{self.label}: {exc}")
        return CheckResult(True, f"{self.label}: {said}")

    def deliver(self, package: Package) -> Delivery:
        idm, ion = self._clients()
        pid, found = idm.deliver(package)
        names = [n for _, n in idm.resources(package)]
        files = package.files if idm.mapping.resources == "all" else [package.main]
        bod_package = package if len(files) == len(package.files) else _with_files(package, files)
        detail = ion.publish(package, ion.build(bod_package, idm_pid=pid, idm_names=names))
        detail.update(idm_pid=pid, idm_item="found by its correlation id" if found else "uploaded",
                      entity=idm.entity_for(package))
        return Delivery(remote_ref=_delivery_ref(detail, pid), detail=detail)


def _with_files(package: Package, files: list[PackageFile]) -> Package:
    import dataclasses

    return dataclasses.replace(package, files=files)
