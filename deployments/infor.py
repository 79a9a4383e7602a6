"""Per-client Infor mapping files: how a document becomes an IDM item and an ION BOD.

They live in the config folder's mappings/ (deployments/mappings/<client>-idm.yaml, <client>-bod.yaml),
one per client or per template, and an integration names them in its connection options:

    connection: infor-idm-ion-connection/acme
    connection_options: {idm_mapping: acme-idm.yaml, bod_mapping: acme-bod.yaml}

YAML, like the client files (Docbits' IDM-Mapping_*.properties and BOD-Mapping_*.properties say the
same things; docs/infor.md has the translation). Values written as templates use the placeholders of
file names ({number}, {supplier}, {external_id}, mapped fields...); dates other than
{year}/{month}/{day} come from the document's metadata ({issue_date}).

`kind: idm` (IdmMapping): document type -> entity, constant attributes, attribute templates, the
correlation attribute (the idempotency key, what a retry searches for), the ACL, the main file's name.
`kind: bod` (BodMapping): the SyncCaptureDocument's document type, accounting entity, action code,
DocumentField templates, an optional XSLT and XML schema.

Checked by `docroute validate` (deployments/checks.py calls the connector options' `config_problems`):
the file reads, every field is known, every placeholder is one the integration has, every document
type the integration takes has an entity (or a BOD document type), the stylesheet compiles, the
schema parses. The IDM connector also checks the attributes against IDM's datamodel before a run
sends anything (and `docroute check` lists them).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from deployments.schema import placeholders, pydantic_problems
from tasks.xslt import XsltError, compile_stylesheet, stylesheet_path

MAPPINGS_DIR = "mappings"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # an IDM entity or attribute id, a BOD element value name
# Placeholders a Package carries (tasks/mapping.py: Package.values holds strings and numbers only).
NOT_IN_PACKAGE = frozenset({"approved_at", "today"})


class MappingFileError(Exception):
    """A mapping file that cannot be used: names the file, the field and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _names(values: dict[str, Any], what: str) -> dict[str, Any]:
    for name in values:
        if not _NAME.match(str(name)):
            raise ValueError(f"{what} {name!r} is not a valid name (letters, digits, _ . -; not starting with a digit)")
    return values


class IdmMapping(_Strict):
    """One IDM item per document (Docbits' IDM mapping file)."""

    kind: Literal["idm"] = Field(description="idm")
    entities: dict[str, str] = Field(
        default_factory=dict,
        description="Document type -> IDM entity (document type), e.g. {invoice: LN_SupplierInvoice} "
        "(Docbits: INVOICE=LN_SupplierInvoice).",
    )
    default_entity: str | None = Field(
        default=None, description="Entity of document types not in `entities` (absent: such a document fails, named)."
    )
    constants: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Attribute id -> constant value, e.g. {MDS_EntityType: InforERPEnterpriseFinancialsReceivedInvoice, "
        "MDS_AccountingEntity: '100'} (Docbits' Static_Fields).",
    )
    attributes: dict[str, str] = Field(
        default_factory=dict,
        description="Attribute id -> template of the document's values, e.g. {SupplierInvoiceNumber: '{number}'} "
        "(Docbits' Index_Fields). An attribute whose value renders empty is left out.",
    )
    correlation_attribute: str = Field(
        default="BOD_AlternateDocumentID_1",
        description="Attribute that holds docroute's correlation id (the idempotency key of the document version): "
        "a retry after a crash or a gateway timeout searches for it instead of uploading a second item "
        "(Docbits: IF_CORRELATION_ID=BOD_AlternateDocumentID_1). It must be a string attribute of every entity used.",
    )
    acl: str = Field(default="Public", description="The item's ACL name in IDM (Docbits' ACL_Fields / SV_ACLString).")
    pdf_name: str | None = Field(
        default=None,
        description="Template of the main file's resource name in IDM, e.g. '{number}.pdf' (Docbits' "
        "Searchable_PDF_Name). Default: the delivered file name.",
    )
    resources: Literal["all", "document"] = Field(
        default="all", description="all: every file of the package is a resource of the item; document: the main file only."
    )

    @field_validator("entities")
    @classmethod
    def _entity_names(cls, v: dict[str, str]) -> dict[str, str]:
        _names(dict.fromkeys(v.values()), "entity")
        return v

    @field_validator("constants", "attributes")
    @classmethod
    def _attribute_ids(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _names(v, "attribute id")

    @field_validator("correlation_attribute", "default_entity")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not _NAME.match(v):
            raise ValueError(f"{v!r} is not a valid IDM name")
        return v

    def entity_for(self, doc_type: str) -> str | None:
        return self.entities.get(doc_type, self.default_entity)

    def used_entities(self) -> list[str]:
        return sorted({*self.entities.values(), *([self.default_entity] if self.default_entity else [])})

    def attribute_ids(self) -> list[str]:
        """Every attribute the items get: constants, templates and the correlation attribute."""
        return list(dict.fromkeys([*self.constants, *self.attributes, self.correlation_attribute]))

    def templates(self) -> dict[str, str]:
        out = {f"attributes.{k}": v for k, v in self.attributes.items()}
        if self.pdf_name:
            out["pdf_name"] = self.pdf_name
        return out


DEFAULT_IDM = IdmMapping(kind="idm", default_entity="MDS_GenericDocument")


class BodMapping(_Strict):
    """One SyncCaptureDocument BOD per document (Docbits' BOD mapping file)."""

    kind: Literal["bod"] = Field(description="bod")
    document_name: str = Field(default="SyncCaptureDocument", description="The BOD (verb + noun): ION's documentName.")
    namespace: str = Field(default="http://schema.infor.com/InforOAGIS/2", description="The BOD's XML namespace.")
    release_id: str = Field(default="9.2", description="releaseID attribute of the BOD's root.")
    version_id: str = Field(default="2.14.6", description="versionID attribute of the BOD's root.")
    action_code: Literal["Add", "Change", "Replace", "Delete"] = Field(
        default="Add", description="DataArea/Sync/ActionCriteria/ActionExpression/@actionCode."
    )
    document_types: dict[str, str] = Field(
        default_factory=lambda: {"invoice": "SupplierInvoice"},
        description="Document type -> CaptureDocument/DocumentType, e.g. {invoice: SupplierInvoice}.",
    )
    default_document_type: str | None = Field(
        default=None, description="DocumentType of document types not in `document_types` (absent: such a document fails)."
    )
    accounting_entity: str | None = Field(
        default=None,
        description="Template of DataArea/Sync/AccountingEntityID, e.g. 'infor.ln.100' or '{accounting_entity}'. "
        "Default: the connection's accounting_entity.",
    )
    location: str = Field(
        default="docroute", description="location attribute of AlternateDocumentID/ID (Docbits sends location=doc2)."
    )
    confirmation_code: Literal["Never", "OnError", "Always"] = Field(
        default="OnError", description="ApplicationArea/Sender/ConfirmationCode: when ION sends a ConfirmBOD back."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Index fields: DocumentField Name -> template of the document's values, e.g. "
        "{InvoiceNumber: '{number}', SupplierName: '{supplier}'}; FieldOrderNumber follows this order.",
    )
    idm_item_field: str = Field(
        default="IDMItemPID",
        description="IDM + ION: the DocumentField Name that carries the IDM item's PID.",
    )
    embed_files: bool = Field(
        default=True,
        description="ION alone: the files travel in the BOD, base64, as DocumentPage/EmbeddedData (IDM + ION: "
        "never, the files are in IDM).",
    )
    xslt: str | None = Field(
        default=None, description="Stylesheet applied to the BOD before it is checked and sent (config folder's xslt/)."
    )
    schema_: str | None = Field(
        default=None, alias="schema",
        description="XML Schema (XSD) the BOD is validated against before sending, relative to the config folder's "
        "mappings/ (or absolute); absent: every element ION needs is checked to be there and not empty.",
    )

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: dict[str, str]) -> dict[str, str]:
        return _names(v, "DocumentField name")

    def document_type_for(self, doc_type: str) -> str | None:
        return self.document_types.get(doc_type, self.default_document_type)

    def templates(self) -> dict[str, str]:
        out = {f"fields.{k}": v for k, v in self.fields.items()}
        if self.accounting_entity:
            out["accounting_entity"] = self.accounting_entity
        return out


DEFAULT_BOD = BodMapping(kind="bod", default_document_type="SupplierInvoice")

_KINDS: dict[str, type[IdmMapping | BodMapping]] = {"idm": IdmMapping, "bod": BodMapping}
_CACHE: dict[tuple[str, int, int], Any] = {}
_LOCK = threading.Lock()


def mapping_path(config_dir: Path, name: str) -> Path:
    """A mapping file named in connection options: relative to the config folder's mappings/, or absolute."""
    p = Path(name)
    return p if p.is_absolute() else Path(config_dir) / MAPPINGS_DIR / p


def load_mapping(config_dir: Path, name: str, kind: str) -> IdmMapping | BodMapping:
    """The mapping file `name` of `kind` ("idm" or "bod"), read and checked (cached while unchanged)."""
    path = mapping_path(config_dir, name)
    try:
        st = path.stat()
    except OSError as exc:
        raise MappingFileError([f"{path}: cannot read the {kind.upper()} mapping file: {exc.strerror or exc}; "
                                f"create it in {Path(config_dir) / MAPPINGS_DIR}"]) from None
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit.kind == kind:
        return hit
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise MappingFileError([f"{path}: cannot read YAML: {' '.join(str(exc).split())}"]) from None
    if not isinstance(data, dict):
        raise MappingFileError([f"{path}: expected a mapping (key: value) at the top level"])
    if data.get("kind") != kind:
        raise MappingFileError([f"{path}: kind: {data.get('kind')!r} where {'an IDM' if kind == 'idm' else 'a BOD'} mapping is expected; "
                                f"set kind: {kind} (or name the file in the right option: idm_mapping or bod_mapping)"])
    try:
        mapping = _KINDS[kind].model_validate(data)
    except ValidationError as exc:
        raise MappingFileError(pydantic_problems(str(path), exc)) from None
    with _LOCK:
        _CACHE[key] = mapping
    return mapping


def mapping_problems(config_dir: Path, name: str, kind: str, where: str, option: str, known: set[str],
                     document_types: list[str]) -> list[str]:
    """What `docroute validate` says of one mapping file an integration names (offline checks)."""
    prefix = f"{where}: connection_options.{option}"
    try:
        mapping = load_mapping(config_dir, name, kind)
    except MappingFileError as exc:
        return [f"{prefix}: {p}" for p in exc.problems]
    path = mapping_path(config_dir, name)
    problems = []
    known = set(known) - NOT_IN_PACKAGE
    for field, template in mapping.templates().items():
        try:
            names = placeholders(template)
        except ValueError as exc:
            problems.append(f"{prefix}: {path}: {field}: bad template {template!r}: {exc}")
            continue
        for placeholder, _ in names:
            if placeholder not in known:
                problems.append(f"{prefix}: {path}: {field}: unknown placeholder {{{placeholder}}}; known: "
                                f"{', '.join(sorted(known))} (declare extra metadata fields in metadata_fields)")
    for doc_type in document_types:
        if isinstance(mapping, IdmMapping) and mapping.entity_for(doc_type) is None:
            problems.append(f"{prefix}: {path}: entities: no IDM entity for document type {doc_type!r}, which the "
                            f"integration takes; add it to entities or set default_entity")
        if isinstance(mapping, BodMapping) and mapping.document_type_for(doc_type) is None:
            problems.append(f"{prefix}: {path}: document_types: no BOD DocumentType for document type {doc_type!r}, "
                            f"which the integration takes; add it to document_types or set default_document_type")
    if isinstance(mapping, BodMapping):
        if mapping.xslt:
            try:
                compile_stylesheet(stylesheet_path(config_dir, mapping.xslt))
            except XsltError as exc:
                problems.append(f"{prefix}: {path}: xslt: {exc}; fix the stylesheet")
        if mapping.schema_:
            try:
                load_schema(config_dir, mapping.schema_)
            except MappingFileError as exc:
                problems.extend(f"{prefix}: {path}: schema: {p}" for p in exc.problems)
    return problems


def load_schema(config_dir: Path, name: str) -> Any:
    """An lxml XMLSchema from a file relative to the config folder's mappings/ (or absolute)."""
    from lxml import etree

    path = mapping_path(config_dir, name)
    try:
        return etree.XMLSchema(etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True)))
    except OSError as exc:
        raise MappingFileError([f"{path}: cannot read the XML schema: {exc.strerror or exc}"]) from None
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise MappingFileError([f"{path}: not a usable XML schema: {' '.join(str(exc).split())}"]) from None
