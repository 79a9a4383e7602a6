"""The way to the Infor ION API gateway that the IDM and ION connectors share (not a connector itself).

One `Gateway` per connector and run: the ION API connection's token (tasks.oauth.TokenManager, shared
with every other connection and process through the infor-ionapi block, refreshed under its lock) sent
by BearerAuth, and one tasks.http.HttpClient on iu/ti with `Accept: application/json`, the gateway's
status classification (401 refresh once then credentials refused, 429 with Retry-After, 502/503/504
transient, other 4xx permanent), pacing and scrubbing. Answers are read as JSON, or as XML turned into
the same shape (IDM answers XML when it ignores the Accept header).

Messages always start with the connector's label (a token endpoint's refusal too), never hold a secret.
"""

from __future__ import annotations

import copy
from typing import Any

import requests

from blocks.infor import InforIonApiConnection
from tasks.connectors.base import Mode, PermanentDeliveryError
from tasks.errors import RemoteError
from tasks.http import HttpClient, Pacer
from tasks.oauth import BearerAuth, TokenManager

USER_AGENT = "docroute-infor/1"
NOTES = {
    504: "gateway timeout (the gateway stops waiting for the backend after 60 s; the request may have gone through)",
    429: "the gateway's quota policy",
}


def ionapi_for(connection: Any, mode: Mode) -> InforIonApiConnection:
    """The ION API connection for a send mode: test_ionapi in test mode (an error when there is none)."""
    if mode == Mode.TEST:
        if connection.test_ionapi is None:
            raise PermanentDeliveryError(f"{connection.label()}: test mode needs test_ionapi set on the connection "
                                         f"(the ION API connection of the test tenant)")
        return connection.test_ionapi
    return connection.ionapi


class Gateway:
    """Requests to iu/ti/<path> with the shared token; see the module docstring."""

    def __init__(self, label: str, connection: Any, mode: Mode):
        self.label = label
        self.ionapi = ionapi_for(connection, mode)
        self.manager = TokenManager(self.ionapi)
        self.auth = BearerAuth(self.manager)
        calls = connection.calls_per_minute
        self.http = HttpClient(
            label,
            base_url=self.ionapi.api_base(),
            verify=self.ionapi.verify_tls,
            ca_bundle=self.ionapi.ca_bundle,
            timeout=(min(10.0, connection.timeout), connection.timeout),
            headers={"Accept": "application/json"},
            user_agent=USER_AGENT,
            auth=self.auth,
            secrets=[*connection.secret_values(), *self.ionapi.secret_values()],
            notes=NOTES,
            pacer=Pacer(calls, 60.0) if calls else None,
        )

    def request(self, method: str, path: str, *, what: str = "", **kwargs: Any) -> requests.Response:
        """One call (retried by the HTTP layer when GET or `idempotent`); every error names the connector."""
        try:
            return self.http.request(method, path, what=what, **kwargs)
        except RemoteError as exc:
            raise self.named(exc) from None

    def named(self, exc: RemoteError) -> RemoteError:
        """`exc`, its message starting with the connector's label if it did not name it (a token refusal)."""
        if self.label in str(exc):
            return exc
        renamed = copy.copy(exc)
        renamed.args = (f"{self.label}: {exc}",)
        return renamed

    def read(self, response: requests.Response, what: str) -> Any:
        """An answer's body as JSON, or its XML in the same shape; a PermanentError when it is neither."""
        ctype = response.headers.get("Content-Type", "").lower()
        body = response.content
        if "xml" in ctype or body.lstrip().startswith(b"<"):
            return xml_to_dict(body, f"{what}: {self.label}")
        if not body.strip():
            return {}
        return self.http.json(response, what)

    def close(self) -> None:
        self.http.close()


def xml_to_dict(data: bytes, what: str) -> dict[str, Any]:
    """An XML answer as the JSON IDM would have sent: {root: {child: text | {...} | [...]}}, namespaces
    dropped, attributes as their names. A PermanentError naming `what` when it is not XML."""
    from lxml import etree

    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError as exc:
        raise PermanentDeliveryError(f"{what} answered XML that does not parse: {exc}") from None

    def convert(el: Any) -> Any:
        children = [c for c in el if isinstance(c.tag, str)]
        if not children and not el.attrib:
            return (el.text or "").strip()
        out: dict[str, Any] = {etree.QName(k).localname: v for k, v in el.attrib.items()}
        for child in children:
            key, value = etree.QName(child).localname, convert(child)
            if key in out:
                out[key] = out[key] if isinstance(out[key], list) else [out[key]]
                out[key].append(value)
            else:
                out[key] = value
        if not children and (el.text or "").strip():
            out["value"] = el.text.strip()
        return out

    return {etree.QName(root).localname: convert(root)}


def as_list(value: Any) -> list[Any]:
    """JSON turned from XML has an object where one element stood, a list where several did."""
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]
