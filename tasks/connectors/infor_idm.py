"""Infor IDM (Document Management) connector: one item per document, through the ION API gateway.

    POST IDM/api/items   {"item": {"entityName": E, "attrs": {"attr": [{name, value}]},
                                   "resrs": {"res": [{"filename", "base64"}]}, "acl": {"name": A}}}

The integration's IDM mapping file (connection_options: {idm_mapping: acme-idm.yaml}, deployments/infor.py)
says which entity a document type becomes, the constant attributes, the attribute templates, the ACL and
the main file's resource name; without one, every document is an MDS_GenericDocument carrying only the
correlation attribute (what the conformance suite uses).

Idempotency: the package's idempotency key (stable per integration, document and version) is the
item's correlation attribute (BOD_AlternateDocumentID_1 by default). Every delivery first searches
`IDM/api/items/search?$query=/<Entity>[@<Attr> = "<key>"]`: an item found is the earlier delivery
(a crash between send and record, a retry) and nothing is uploaded again. An upload answered by a
gateway timeout (504: the gateway gave up after 60 s, IDM may have finished), a 502 or a connection
cut is looked up again after `after_timeout_wait` before it is reported transient; the next attempt
searches first as well, so a large file that the gateway cut off is never stored twice.

Before a run sends anything (`open()`), the mapping's attributes are checked against IDM's datamodel
(`IDM/api/datamodel/entities/<name>`): an attribute the entity does not have stops the run, named,
with the entity's attributes. A gateway that does not answer the datamodel (403, 404) skips the check.
`check()` lists each mapped entity's attributes (docroute check). Bodies are spooled (base64 streamed,
files verified against their SHA-256 before a byte is sent). Accept: application/json, XML answers read too.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import Field

from deployments.config import parse_config
from deployments.infor import (
    DEFAULT_IDM,
    IdmMapping,
    MappingFileError,
    load_mapping,
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
from tasks.connectors.infor_gateway import Gateway, as_list
from tasks.errors import RemoteError
from tasks.settings import get_settings
from tasks.templates import MappingError, Renderer, sanitize_segment

log = logging.getLogger("docroute.infor")

SPOOL_IN_MEMORY = 1024 * 1024
READ_SIZE = 3 * 256 * 1024  # a multiple of 3: base64 chunks concatenate without padding
ITEMS = "IDM/api/items"
SEARCH = "IDM/api/items/search"
DATAMODEL = "IDM/api/datamodel/entities"
_KEY = re.compile(r"^[A-Za-z0-9_.:-]+$")  # what a correlation id may hold: nothing to escape in a query


class InforIdmOptions(ConnectorOptions):
    """connection_options of an IDM integration."""

    idm_mapping: str | None = Field(
        default=None, description="IDM mapping file, in the config folder's mappings/, e.g. acme-idm.yaml."
    )

    def config_problems(self, config_dir: Path, where: str, known: set[str], document_types: list[str]) -> list[str]:
        """docroute validate: the mapping file (deployments/checks.py)."""
        if not self.idm_mapping:
            return []
        return mapping_problems(config_dir, self.idm_mapping, "idm", where, "idm_mapping", known, document_types)


def read_idm_mapping(name: str | None) -> IdmMapping:
    if not name:
        return DEFAULT_IDM
    try:
        mapping = load_mapping(get_settings().config_dir, name, "idm")
    except MappingFileError as exc:
        raise PermanentDeliveryError(f"IDM mapping {name}: {exc}") from None
    assert isinstance(mapping, IdmMapping)
    return mapping


class _Body:
    """A spooled body with a length, so requests sends Content-Length and streams it."""

    def __init__(self, spool: BinaryIO, size: int):
        self._spool, self._size = spool, size

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        return self._spool.read(n)


class IdmClient:
    """IDM through a Gateway: datamodel, search, upload (what the IDM and the IDM + ION connectors share)."""

    def __init__(self, gateway: Gateway, mapping: IdmMapping, mapping_name: str | None, connection: Any):
        self.gateway = gateway
        self.mapping = mapping
        self.mapping_name = mapping_name or "(default: MDS_GenericDocument)"
        self.connection = connection
        self.attributes: dict[str, list[str]] = {}  # entity -> its attribute names, as the datamodel says

    @property
    def label(self) -> str:
        return self.gateway.label

    # -- datamodel -------------------------------------------------------------------------------
    def _datamodel(self, path: str, what: str) -> dict[str, Any] | None:
        """A datamodel answer; None when the gateway does not answer the datamodel (403, 404, 405, 501)."""
        response = self.gateway.request("GET", path, what=what, check=False)
        try:
            if response.status_code in (403, 404, 405, 501):
                return None
            error = self.gateway.http.status_error(response, what)
            if error is not None:
                raise self.gateway.named(error)
            return self.gateway.read(response, what)
        finally:
            response.close()

    def entity_names(self) -> list[str] | None:
        """The entities (document types) IDM has; None when the gateway does not tell."""
        body = self._datamodel(DATAMODEL, "IDM datamodel")
        if body is None:
            return None
        return [str(e.get("name")) for e in as_list((body.get("entities") or {}).get("entity")) if isinstance(e, dict)]

    def entity_attributes(self, entity: str) -> list[str] | None:
        """The entity's attribute names; None when the gateway does not tell."""
        body = self._datamodel(f"{DATAMODEL}/{entity}", f"IDM datamodel of {entity}")
        if body is None:
            return None
        attrs = as_list(((body.get("entity") or {}).get("attrs") or {}).get("attr"))
        return [str(a.get("name")) for a in attrs if isinstance(a, dict) and a.get("name")]

    def validate(self) -> dict[str, list[str]]:
        """Every entity of the mapping exists and has every attribute the mapping sets; raises PermanentError
        naming the attribute, the entity and the mapping file. Returns entity -> attributes (those checked).
        Skipped, with a log line, where the gateway does not answer the datamodel or not now."""
        try:
            entities = self.entity_names()
            if entities is None:
                log.info("%s: the gateway does not answer IDM's datamodel; the mapping's attributes are not checked", self.label)
                return self.attributes
            for entity in self.mapping.used_entities():
                if entity not in entities:
                    raise PermanentDeliveryError(
                        f"{self.label}: IDM mapping {self.mapping_name}: {entity!r} is not an entity of IDM (its entities: "
                        f"{', '.join(entities) or 'none'}); fix entities or default_entity in the mapping file"
                    )
                names = self.entity_attributes(entity)
                if names is None:
                    continue
                unknown = [a for a in self.mapping.attribute_ids() if a not in names]
                if unknown:
                    raise PermanentDeliveryError(
                        f"{self.label}: IDM mapping {self.mapping_name}: {', '.join(repr(a) for a in unknown)} "
                        f"{'is not an attribute' if len(unknown) == 1 else 'are not attributes'} of entity {entity} "
                        f"(its attributes: {', '.join(names) or 'none'}); fix the mapping file before documents are sent"
                    )
                self.attributes[entity] = names
        except TransientDeliveryError as exc:
            log.warning("%s: IDM datamodel not checked now: %s", self.label, exc)
        return self.attributes

    # -- items ------------------------------------------------------------------------------------
    def entity_for(self, package: Package) -> str:
        entity = self.mapping.entity_for(package.document_type)
        if entity is None:
            raise PermanentDeliveryError(
                f"document {package.doc_id}: IDM mapping {self.mapping_name} has no entity for document type "
                f"{package.document_type!r}; add it to entities or set default_entity"
            )
        return entity

    def search(self, package: Package, entity: str | None = None) -> str | None:
        """The PID of the item an earlier attempt stored for this package, if any."""
        entity = entity or self.entity_for(package)
        key = package.idempotency_key
        if not _KEY.match(key):
            raise PermanentDeliveryError(f"document {package.doc_id}: correlation id {key!r} cannot be searched for")
        query = f'/{entity}[@{self.mapping.correlation_attribute} = "{key}"]'
        what = f"document {package.doc_id}: IDM search"
        response = self.gateway.request("GET", SEARCH, what=what, params={"$query": query, "$offset": "0", "$limit": "5"})
        try:
            body = self.gateway.read(response, what)
        finally:
            response.close()
        items = as_list((body.get("items") or {}).get("item"))
        pids = [str(i.get("pid")) for i in items if isinstance(i, dict) and i.get("pid")]
        if len(pids) > 1:
            log.warning("%s: %d IDM items carry the correlation id of document %s (%s); using %s",
                        self.label, len(pids), package.doc_id, ", ".join(pids), pids[0])
        return pids[0] if pids else None

    def deliver(self, package: Package) -> tuple[str, bool]:
        """(PID, found): the item of this package, found by search or uploaded now."""
        entity = self.entity_for(package)
        attrs = self._attrs(package)
        resources = self.resources(package)
        total = sum(f.size for f, _ in resources)
        if total > self.connection.max_item_bytes:
            raise PermanentDeliveryError(
                f"document {package.doc_id}: {total} bytes of files is more than max_item_bytes "
                f"({self.connection.max_item_bytes}) of {self.label}"
            )
        pid = self.search(package, entity)
        if pid is not None:
            return pid, True
        return self._upload(package, entity, attrs, resources), False

    def _attrs(self, package: Package) -> list[dict[str, str]]:
        renderer = Renderer(package.values, Sanitize(), package.doc_id)
        out = [{"name": k, "value": str(v)} for k, v in self.mapping.constants.items()]
        for name, template in self.mapping.attributes.items():
            try:
                value = renderer.text(template, f"IDM mapping {self.mapping_name}: attributes.{name}")
            except MappingError as exc:
                raise PermanentDeliveryError(str(exc)) from None
            if value != "":
                out.append({"name": name, "value": value})
        out = [a for a in out if a["name"] != self.mapping.correlation_attribute]
        out.append({"name": self.mapping.correlation_attribute, "value": package.idempotency_key})
        return out

    def resources(self, package: Package) -> list[tuple[PackageFile, str]]:
        files = package.files if self.mapping.resources == "all" else [package.main]
        names = [f.name for f in files]
        if self.mapping.pdf_name:
            renderer = Renderer(package.values, Sanitize(), package.doc_id)
            try:
                main = renderer.text(self.mapping.pdf_name, f"IDM mapping {self.mapping_name}: pdf_name")
            except MappingError as exc:
                raise PermanentDeliveryError(str(exc)) from None
            names[0] = sanitize_segment(main, Sanitize()) or names[0]
        return list(zip(files, names))

    def _upload(self, package: Package, entity: str, attrs: list[dict[str, str]],
                resources: list[tuple[PackageFile, str]]) -> str:
        what = f"document {package.doc_id}: IDM upload"
        with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
            self._write_item(package, entity, attrs, resources, spool)
            size = spool.tell()
            spool.seek(0)
            try:
                response = self.gateway.request(
                    "POST", ITEMS, what=what, params={"$language": "en-US"},
                    data=_Body(spool, size), headers={"Content-Type": "application/json"},
                )
            except TransientDeliveryError as exc:
                if exc.status not in (None, 502, 504):  # 429, 503: the gateway did not pass it on
                    raise
                pid = self._find_after(package, entity, exc)
                if pid is None:
                    raise
                return pid
        try:
            body = self.gateway.read(response, what)
        finally:
            response.close()
        pid = (body.get("item") or {}).get("pid") if isinstance(body.get("item"), dict) else None
        if not pid:
            pid = self.search(package, entity)  # an answer without the PID: the item is there or not
        if not pid:
            raise TransientDeliveryError(f"{what}: {self.label} answered {response.status_code} without an item PID, "
                                         f"and no item with the correlation id is found")
        return str(pid)

    def _find_after(self, package: Package, entity: str, exc: RemoteError) -> str | None:
        """After an upload that may have gone through: wait, then search (None: not there, or no answer)."""
        time.sleep(self.connection.after_timeout_wait)
        try:
            pid = self.search(package, entity)
        except RemoteError as again:
            log.info("%s: document %s: could not look the item up after %s: %s", self.label, package.doc_id, exc, again)
            return None
        if pid is not None:
            log.info("%s: document %s: the upload was answered %s, and IDM holds its item %s: not sent again",
                     self.label, package.doc_id, exc.status or "with a cut connection", pid)
        return pid

    def _write_item(self, package: Package, entity: str, attrs: list[dict[str, str]],
                    resources: list[tuple[PackageFile, str]], out: BinaryIO) -> None:
        """The item JSON, written piecewise so no file's base64 is ever whole in memory."""
        import base64

        head = json.dumps({"item": {"entityName": entity, "attrs": {"attr": attrs}, "acl": {"name": self.mapping.acl},
                                    "resrs": {"res": []}}})
        assert head.endswith("[]}}}")
        out.write(head[:-4].encode())
        for n, (f, name) in enumerate(resources):
            out.write(((", " if n else "") + json.dumps({"filename": name})[:-1] + ', "base64": "').encode())
            try:
                with f.open() as src:
                    reader = VerifyingReader(src, f)
                    while chunk := reader.read(READ_SIZE):
                        out.write(base64.b64encode(chunk))
                    reader.verify(package)
            except OSError as exc:
                raise TransientDeliveryError(
                    f"document {package.doc_id}: cannot read source file {f.name} for {self.label}: {exc.strerror or exc}"
                ) from None
            out.write(b'"}')
        out.write(b"]}}}")


class InforIdmConnector(Connector):
    """One IDM item per document (module docstring); lookup by the correlation attribute."""

    options_model = InforIdmOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._idm: IdmClient | None = None

    def _client(self) -> IdmClient:
        if self._idm is None:
            gateway = Gateway(self.label, self.connection, self.mode)
            self._idm = IdmClient(gateway, read_idm_mapping(self.options.idm_mapping), self.options.idm_mapping, self.connection)
        return self._idm

    def open(self) -> None:
        """Check the mapping's attributes against IDM's datamodel before anything is sent."""
        self._client().validate()

    def close(self) -> None:
        if self._idm is not None:
            self._idm.gateway.close()
            self._idm = None

    def check(self) -> CheckResult:
        try:
            entities = "; ".join(check_entities(idm) for idm in checked_clients(self._client(), self.connection,
                                                                                 self.options.idm_mapping))
        except DeliveryError as exc:
            return CheckResult(False, f"{self.label}: {exc}" if self.label not in str(exc) else str(exc))
        return CheckResult(True, f"{self.label}: IDM answers; {entities}")

    def deliver(self, package: Package) -> Delivery:
        idm = self._client()
        pid, found = idm.deliver(package)
        return Delivery(remote_ref=pid, already_present=found,
                        detail={"pid": pid, "entity": idm.entity_for(package), "correlation_id": package.idempotency_key})

    def lookup(self, package: Package) -> Delivery | None:
        idm = self._client()
        pid = idm.search(package)
        if pid is None:
            return None
        return Delivery(remote_ref=pid, already_present=True,
                        detail={"pid": pid, "entity": idm.entity_for(package), "correlation_id": package.idempotency_key})


def mappings_in_use(connection: Any, option: str) -> list[str]:
    """The mapping files the integrations using this connection name in `option`: `docroute check` builds a
    connector without an integration's options, and shows what those files set."""
    ref = connection.reference() if callable(getattr(connection, "reference", None)) else ""
    if not ref:
        return []
    try:
        config, _ = parse_config(get_settings().config_dir)
    except Exception:  # noqa: BLE001 - a check without a readable configuration checks the connection alone
        return []
    return sorted({str(i.connection_options[option]) for i in config.integrations.values()
                   if i.connection == ref and i.connection_options.get(option)})


def checked_clients(idm: IdmClient, connection: Any, option_value: str | None) -> list[IdmClient]:
    """What a check looks at: the connector's own mapping, else each mapping file its integrations use."""
    if option_value:
        return [idm]
    names = mappings_in_use(connection, "idm_mapping")
    return [IdmClient(idm.gateway, read_idm_mapping(n), n, connection) for n in names] or [idm]


def check_entities(idm: IdmClient) -> str:
    """What docroute check says of IDM: the mapped entities and their attributes (the datamodel), or why not."""
    entities = idm.entity_names()
    if entities is None:
        return "the gateway does not answer IDM's datamodel: the mapping's attributes cannot be checked"
    checked = idm.validate()
    parts = [f"{len(entities)} entities in the datamodel"]
    for entity in idm.mapping.used_entities():
        if entity in checked:
            parts.append(f"{entity} has attributes {', '.join(checked[entity])} (mapping {idm.mapping_name} sets "
                         f"{', '.join(idm.mapping.attribute_ids())}: all known)")
        else:
            parts.append(f"{entity}: attributes not available from the gateway")
    return "; ".join(parts)
