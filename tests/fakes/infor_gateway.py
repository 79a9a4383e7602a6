"""A local Infor ION API gateway: the token service, IDM and ION messaging, as ../shared/reference/connectors.md
sections 0, 2, 3 and 4 describe them (and as docs/infor.md decides where the reference says [?]).

Token service (pu = <url>/<tenant>/as/):
- POST token.oauth2: form-encoded only (a raw '#' in the body is refused: the saak holds one and must
  arrive as %23), grant_type=password, client_id/client_secret in the form (or HTTP basic), username = saak,
  password = sask. A wrong client is 401 invalid_client, a wrong saak or sask 400 invalid_grant. Answers
  {access_token, token_type: Bearer, expires_in, refresh_token}; `expires_in` can change at any time.
- POST revoke_token.oauth2 (RFC 7009): the token stops working.

API (iu/ti/...), every route needs a live bearer token (401 otherwise: expired, revoked, unknown):
- GET IDM/api/datamodel/entities -> {"entities": {"entity": [{name, desc}]}}
- GET IDM/api/datamodel/entities/<name> -> {"entity": {name, attrs: {attr: [{name, type, qual, required}]}}}; 404 unknown
- POST IDM/api/items: {"item": {entityName, attrs: {attr: [{name, value}]}, resrs: {res: [{filename, base64}]},
  acl: {name}}}: unknown entity, attribute or ACL, a missing required attribute or bad base64 is a 400;
  stored with a PID "<entity>-<n>-1-LATEST" and answered {"item": {pid, entityName, ...}}.
- GET IDM/api/items/search?$query=/<Entity>[@<Attr> = "<value>"]&$offset&$limit -> {"items": {"item": [...]}}
- IDM answers XML unless the request accepts application/json (or when `xml_answers` is set).
- GET IONSERVICES/api/ion/messaging/service/ping -> 200 when ION is provisioned (`ion_provisioned`), 403 otherwise.
- POST IONSERVICES/api/ion/messaging/service/v2/multipartMessage: multipart/form-data with a ParameterRequest
  part (JSON: documentName, messageId, fromLogicalId lid://infor.ims.<point>, toLogicalId lid://...) and a
  MessagePayload part that is well-formed XML whose root is documentName; 400 otherwise. Published:
  201 {"status": "Success", "message": "Published successfully"}. Assumption (docs/infor.md): a messageId
  already received is not published again (counted in `repeats`).

The 60 s cut-off: with `bytes_per_second`, an upload takes len(body) / bytes_per_second; past `cutoff`
seconds the gateway answers 504 while IDM goes on and stores the item when that time is up. FakeAPI.fault adds 429 with
Retry-After, 502/503, "after" (the work happens, then a 504) and cut connections.

For the demo: `start_gateway()` starts one on a free port and returns its URL and a ready .ionapi dict.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from tests.fakes.base import FakeAPI, Request, Response, parse_multipart

FORM_ENCODED = re.compile(r"^[A-Za-z0-9._~%+=&*-]*$")
QUERY = re.compile(r'^/(?P<entity>[A-Za-z_][\w.-]*)\[@(?P<attr>[A-Za-z_][\w.-]*)\s*=\s*"(?P<value>[^"]*)"\]$')
ACLS = ("Public", "Private", "Confidential")


def _attr(name: str, type_: str = "1", required: bool = False) -> dict[str, Any]:
    return {"name": name, "desc": name.replace("_", " "), "type": type_, "qual": name, "required": required}


# Two entities: the generic document type every IDM has, and an LN supplier invoice (Docbits' LN mapping).
DEFAULT_ENTITIES: dict[str, list[dict[str, Any]]] = {
    "MDS_GenericDocument": [_attr("MDS_Name"), _attr("BOD_AlternateDocumentID_1")],
    "LN_SupplierInvoice": [
        _attr("MDS_EntityType", required=True), _attr("MDS_AccountingEntity"), _attr("SupplierInvoiceNumber"),
        _attr("SupplierName"), _attr("InvoiceDate", "7"), _attr("InvoiceAmount", "6"), _attr("BOD_AlternateDocumentID_1"),
    ],
}


@dataclass
class Item:
    pid: str
    entity: str
    attrs: dict[str, str]
    resources: dict[str, bytes]
    acl: str
    created: float = field(default_factory=time.time)


@dataclass
class Published:
    """One BOD ION published: the ParameterRequest and the payload as received."""

    parameters: dict[str, Any]
    payload: bytes

    @property
    def root(self) -> ET.Element:
        return ET.fromstring(self.payload)

    def find(self, path: str) -> list[ET.Element]:
        """Elements at a path of local names (namespaces ignored), e.g. DataArea/CaptureDocument/DocumentPage."""
        found = [self.root]
        for step in path.split("/"):
            found = [c for el in found for c in el if c.tag.rsplit("}", 1)[-1] == step]
        return found

    def text(self, path: str) -> str | None:
        els = self.find(path)
        return (els[0].text or "") if els else None

    def fields(self) -> dict[str, str]:
        out = {}
        for f in self.find("DataArea/CaptureDocument/DocumentField"):
            kids = {c.tag.rsplit("}", 1)[-1]: (c.text or "") for c in f}
            out[kids.get("Name", "")] = kids.get("Value", "")
        return out

    def embedded(self) -> dict[str, bytes]:
        """The files the BOD carries (DocumentPage/EmbeddedData), by file name."""
        out = {}
        for page in self.find("DataArea/CaptureDocument/DocumentPage"):
            for el in page:
                if el.tag.rsplit("}", 1)[-1] == "EmbeddedData":
                    out[el.get("filename", "")] = base64.b64decode(el.text or "", validate=True)
        return out


class InforGateway(FakeAPI):
    def __init__(self, tenant: str = "ACME_TST", *, expires_in: float = 7200, cutoff: float = 60.0,
                 bytes_per_second: float | None = None, entities: dict[str, list[dict[str, Any]]] | None = None,
                 xml_answers: bool = False, name: str = "Infor ION API gateway"):
        super().__init__(name=name)
        self.tenant = tenant
        self.client_id = f"{tenant}~{secrets.token_urlsafe(12)}"
        self.client_secret = secrets.token_urlsafe(24)
        self.saak = f"{tenant}#{secrets.token_urlsafe(30)}"
        self.sask = secrets.token_urlsafe(30)
        self.expires_in = expires_in
        self.cutoff = cutoff
        self.bytes_per_second = bytes_per_second
        self.entities = {k: list(v) for k, v in (entities or DEFAULT_ENTITIES).items()}
        self.xml_answers = xml_answers
        self.datamodel = True  # False: the datamodel routes answer 404 (a gateway that does not expose them)
        self.ion_provisioned = True
        self.tokens: dict[str, float] = {}  # live access token -> expiry (time.time())
        self.grants: Counter[str] = Counter()
        self.token_errors: list[str] = []
        self.raw_token_bodies: list[bytes] = []
        self.revoked: list[str] = []
        self.items: list[Item] = []
        self.bods: dict[str, Published] = {}  # messageId -> the BOD published
        self.repeats: Counter[str] = Counter()  # messageId -> times it came again
        self.refused_messages: list[str] = []  # why multipartMessage requests were refused (400)
        self.unauthorised = 0  # API requests answered 401
        self._seq = 0
        as_ = f"/{tenant}/as"
        api = f"/{tenant}"
        self.route("POST", f"{as_}/token.oauth2")(self._token)
        self.route("POST", f"{as_}/revoke_token.oauth2")(self._revoke)
        self.route("GET", f"{api}/IDM/api/datamodel/entities")(self._entities)
        self.route("GET", f"{api}/IDM/api/datamodel/entities/(?P<entity>[^/]+)")(self._entity)
        self.route("POST", f"{api}/IDM/api/items")(self._upload)
        self.route("GET", f"{api}/IDM/api/items/search")(self._search)
        self.route("GET", f"{api}/IONSERVICES/api/ion/messaging/service/ping")(self._ping)
        self.route("POST", f"{api}/IONSERVICES/api/ion/messaging/service/v2/multipartMessage")(self._multipart)

    # -- for tests and the demo ---------------------------------------------------------------------
    def ionapi(self, **changes: str) -> dict[str, str]:
        """The .ionapi file of a Backend Service app of this tenant (as Authorized Apps downloads it)."""
        data = {
            "ti": self.tenant, "cn": "docroute", "dt": "12", "ci": self.client_id, "cs": self.client_secret,
            "iu": self.url, "pu": f"{self.url}/{self.tenant}/as/", "oa": "authorization.oauth2", "ot": "token.oauth2",
            "or": "revoke_token.oauth2", "ev": "U1234567", "v": "1.0", "saak": self.saak, "sask": self.sask,
        }
        data.update(changes)
        return data

    def invalidate_access_tokens(self) -> None:
        """Every access token stops working now (a key rotation): the next call is a 401."""
        with self.lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def items_with(self, attr: str, value: str) -> list[Item]:
        with self.lock:
            return [i for i in self.items if i.attrs.get(attr) == value]

    def upload_requests(self) -> int:
        return len(self.calls("POST", r"/IDM/api/items$"))

    def bod_requests(self) -> int:
        return len(self.calls("POST", r"/multipartMessage$"))

    # -- token service ------------------------------------------------------------------------------
    def _oauth_error(self, error: str, description: str, status: int = 400) -> Response:
        self.token_errors.append(error)
        return Response.json({"error": error, "error_description": description}, status)

    def _token(self, req: Request) -> Response:
        with self.lock:
            self.raw_token_bodies.append(req.body)
        if not req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return self._oauth_error("invalid_request", "the body must be application/x-www-form-urlencoded")
        if not FORM_ENCODED.match(req.body.decode("latin-1")):
            return self._oauth_error("invalid_request", "the body is not form-encoded (a raw '#' or space?)")
        form = req.form()
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = req.headers.get("authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != self.client_id or client_secret != self.client_secret:
            return self._oauth_error("invalid_client", "client authentication failed", 401)
        grant = form.get("grant_type", "")
        with self.lock:
            self.grants[grant] += 1
        if grant != "password":
            return self._oauth_error("unsupported_grant_type", f"grant {grant!r} is not allowed for a backend service")
        if form.get("username") != self.saak or form.get("password") != self.sask:
            return self._oauth_error("invalid_grant", "the service account's access or secret key is wrong")
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = time.time() + self.expires_in
        return Response.json({"access_token": token, "token_type": "Bearer", "expires_in": int(self.expires_in) or 1,
                              "refresh_token": secrets.token_urlsafe(32)})

    def _revoke(self, req: Request) -> Response:
        token = req.form().get("token", "")
        with self.lock:
            if token in self.tokens:
                self.tokens[token] = 0.0
            self.revoked.append(token)
        return Response(200, {"Content-Length": "0"}, b"")

    def _unauthorised(self, req: Request) -> Response | None:
        auth = req.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self.lock:
            live = self.tokens.get(token, 0.0) > time.time()
        if not live:
            with self.lock:
                self.unauthorised += 1
            return Response.json({"error": "invalid_token", "error_description": "expired, revoked or unknown"}, 401,
                                 {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    # -- IDM --------------------------------------------------------------------------------------
    def _answer(self, req: Request, data: dict[str, Any], status: int = 200) -> Response:
        if "application/json" in req.headers.get("accept", "") and not self.xml_answers:
            return Response.json(data, status)
        return Response(status, {"Content-Type": "application/xml;charset=UTF-8"}, _to_xml(data).encode())

    def _entities(self, req: Request) -> Response:
        if (denied := self._unauthorised(req)) is not None:
            return denied
        if not self.datamodel:
            return Response.text("no route", 404)
        return self._answer(req, {"entities": {"entity": [{"name": n, "desc": n} for n in self.entities]}})

    def _entity(self, req: Request, entity: str) -> Response:
        if (denied := self._unauthorised(req)) is not None:
            return denied
        if not self.datamodel:
            return Response.text("no route", 404)
        if entity not in self.entities:
            return self._answer(req, {"error": {"message": f"Entity {entity} does not exist"}}, 404)
        return self._answer(req, {"entity": {"name": entity, "attrs": {"attr": self.entities[entity]}}})

    def _upload(self, req: Request) -> Response:
        if (denied := self._unauthorised(req)) is not None:
            return denied
        started = time.monotonic()
        try:
            item = req.json()["item"]
            entity = item["entityName"]
            attrs = {a["name"]: str(a["value"]) for a in item.get("attrs", {}).get("attr", [])}
            res = item.get("resrs", {}).get("res", [])
            acl = (item.get("acl") or {}).get("name", "Public")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return self._answer(req, {"error": {"message": f"malformed item: {type(exc).__name__}: {exc}"}}, 400)
        if entity not in self.entities:
            return self._answer(req, {"error": {"message": f"Entity {entity} does not exist"}}, 400)
        known = {a["name"]: a for a in self.entities[entity]}
        for name in attrs:
            if name not in known:
                return self._answer(req, {"error": {"message": f"Attribute {name} does not exist for entity {entity}"}}, 400)
        for name, a in known.items():
            if a.get("required") and not attrs.get(name):
                return self._answer(req, {"error": {"message": f"Attribute {name} of entity {entity} is required"}}, 400)
        if acl not in ACLS:
            return self._answer(req, {"error": {"message": f"ACL {acl} does not exist"}}, 400)
        resources = {}
        for r in res:
            try:
                resources[r["filename"]] = base64.b64decode(r["base64"], validate=True)
            except (KeyError, TypeError, binascii.Error) as exc:
                return self._answer(req, {"error": {"message": f"bad resource: {type(exc).__name__}"}}, 400)
        work = len(req.body) / self.bytes_per_second if self.bytes_per_second else 0.0
        time.sleep(max(0.0, min(work, self.cutoff) - (time.monotonic() - started)))
        if work > self.cutoff:  # the gateway gives up waiting; IDM goes on and stores the item when it is done
            threading.Timer(work - self.cutoff, self._store, (entity, attrs, resources, acl)).start()
            return Response.text("504 Gateway Timeout: the backend did not answer within the gateway's cut-off", 504)
        return self._answer(req, {"item": self._summary(self._store(entity, attrs, resources, acl))})

    def _store(self, entity: str, attrs: dict[str, str], resources: dict[str, bytes], acl: str) -> Item:
        with self.lock:
            self._seq += 1
            stored = Item(f"{entity}-{self._seq}-1-LATEST", entity, attrs, resources, acl)
            self.items.append(stored)
        return stored

    @staticmethod
    def _summary(item: Item) -> dict[str, Any]:
        return {"pid": item.pid, "id": item.pid.split("-")[-3], "entityName": item.entity, "version": "1",
                "attrs": {"attr": [{"name": k, "value": v} for k, v in item.attrs.items()]},
                "resrs": {"res": [{"filename": n, "size": str(len(b))} for n, b in item.resources.items()]},
                "acl": {"name": item.acl}}

    def _search(self, req: Request) -> Response:
        if (denied := self._unauthorised(req)) is not None:
            return denied
        m = QUERY.match(req.arg("$query", "") or "")
        if m is None:
            return self._answer(req, {"error": {"message": f"cannot parse query {req.arg('$query')!r}"}}, 400)
        offset, limit = int(req.arg("$offset", "0") or 0), int(req.arg("$limit", "20") or 20)
        with self.lock:
            found = [i for i in self.items if i.entity == m["entity"] and i.attrs.get(m["attr"]) == m["value"]]
        page = found[offset:offset + limit]
        return self._answer(req, {"items": {"item": [self._summary(i) for i in page], "offset": str(offset),
                                            "limit": str(limit)}})

    # -- ION messaging --------------------------------------------------------------------------------
    def _ping(self, req: Request) -> Response:
        if (denied := self._unauthorised(req)) is not None:
            return denied
        if not self.ion_provisioned:
            return Response.json({"message": "ION messaging is not provisioned for this tenant"}, 403)
        return Response.json({"status": "OK"})

    def _refuse(self, message: str) -> Response:
        with self.lock:
            self.refused_messages.append(message)
        return Response.json({"status": "Error", "message": message}, 400)

    def _multipart(self, req: Request) -> Response:
        if (denied := self._unauthorised(req)) is not None:
            return denied
        ctype = req.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data") or "boundary=" not in ctype:
            return self._refuse("the request must be multipart/form-data")
        parts: dict[str, tuple[dict[str, str], bytes]] = {}
        try:
            for headers, content in parse_multipart(req.body, ctype):
                m = re.search(r'name="([^"]+)"', headers.get("content-disposition", ""))
                if m:
                    parts[m.group(1)] = (headers, content)
        except (AssertionError, IndexError, ValueError) as exc:
            return self._refuse(f"malformed multipart body: {exc}")
        if "ParameterRequest" not in parts or "MessagePayload" not in parts:
            return self._refuse(f"parts ParameterRequest and MessagePayload are required (got {sorted(parts)})")
        try:
            params = json.loads(parts["ParameterRequest"][1])
        except ValueError:
            return self._refuse("ParameterRequest is not JSON")
        for key in ("documentName", "messageId", "fromLogicalId", "toLogicalId"):
            if not isinstance(params, dict) or not params.get(key):
                return self._refuse(f"ParameterRequest lacks {key}")
        if not str(params["fromLogicalId"]).startswith("lid://infor.ims."):
            return self._refuse("fromLogicalId must be an IMS connection point, lid://infor.ims.<point>")
        if not str(params["toLogicalId"]).startswith("lid://"):
            return self._refuse("toLogicalId must be a logical id, lid://...")
        payload = parts["MessagePayload"][1]
        try:
            root = ET.fromstring(payload)
        except ET.ParseError as exc:
            return self._refuse(f"MessagePayload is not well-formed XML: {exc}")
        if root.tag.rsplit("}", 1)[-1] != params["documentName"]:
            return self._refuse(f"the payload is a {root.tag.rsplit('}', 1)[-1]}, not the {params['documentName']} "
                                f"the ParameterRequest names")
        message_id = str(params["messageId"])
        with self.lock:
            if message_id in self.bods:
                self.repeats[message_id] += 1
            else:
                self.bods[message_id] = Published(params, payload)
        return Response.json({"status": "Success", "message": "Published successfully"}, 201)


def _to_xml(data: Any, tag: str | None = None) -> str:
    """The XML IDM answers when JSON is not asked for (lists repeat their element)."""
    if tag is None:
        (root, value), = data.items()
        return '<?xml version="1.0" encoding="UTF-8"?>' + _to_xml(value, root)
    if isinstance(data, list):
        return "".join(_to_xml(v, tag) for v in data)
    if isinstance(data, dict):
        return f"<{tag}>" + "".join(_to_xml(v, k) for k, v in data.items()) + f"</{tag}>"
    return f"<{tag}>{escape(str(data))}</{tag}>"


_RUNNING: list[InforGateway] = []
_RUNNING_LOCK = threading.Lock()


def start_gateway(tenant: str = "DEMO_TST", **settings: Any) -> tuple[str, dict[str, str]]:
    """Start a gateway on 127.0.0.1 (a free port, a daemon thread, until the process ends); returns its URL
    and a ready .ionapi dict (what InforIonApiConnection.from_ionapi takes). `running()` lists them."""
    gateway = InforGateway(tenant, **settings).start()
    with _RUNNING_LOCK:
        _RUNNING.append(gateway)
    return gateway.url, gateway.ionapi()


def running() -> list[InforGateway]:
    """The gateways start_gateway started in this process (to read what they received)."""
    with _RUNNING_LOCK:
        return list(_RUNNING)
