"""The Microsoft Graph client shared by the OneDrive/SharePoint connector and source.

Tokens: app-only through msal (ConfidentialClientApplication, client credentials with a secret or
a certificate, pointed at the connection's authority host: msal reads its OpenID configuration
there; no instance discovery), delegated through tasks/oauth.py (refresh tokens rotate: saved at
once, refreshes serialised across processes). Graph calls go through tasks/http.py; the upload
session URLs and download URLs Graph hands out are pre-authenticated and get no token (Graph's
docs: sending the Authorization header to uploadUrl can make it fail), through token-less clients
made per host.
"""

from __future__ import annotations

import threading
from urllib.parse import quote, urlsplit

import requests
from requests.auth import AuthBase

from tasks.errors import CredentialsRefusedError, PermanentError, TransientError
from tasks.http import HttpClient
from tasks.oauth import BearerAuth, TokenManager
from tasks.secrets import scrub


class _VerifyingSession(requests.Session):
    """A requests session that sends every request with the connection's TLS setting (a session-level
    `verify` loses to REQUESTS_CA_BUNDLE, requests #3829)."""

    def __init__(self, verify: bool | str):
        super().__init__()
        self._verify = verify

    def request(self, *args, **kwargs):
        kwargs["verify"] = self._verify
        return super().request(*args, **kwargs)


class MsalAuth(AuthBase):
    """App-only bearer tokens from msal (cached by msal until near expiry), only to the Graph host."""

    def __init__(self, block, label: str):
        import msal

        self.block, self.label = block, label
        credential = block.client_secret.get_secret_value() if block.client_secret else {
            "private_key": block.client_certificate.get_secret_value(), "thumbprint": block.certificate_thumbprint}
        verify = block.ca_bundle if (block.verify_tls and block.ca_bundle) else bool(block.verify_tls)
        self.app = msal.ConfidentialClientApplication(
            block.client_id, client_credential=credential, authority=f"{block.authority_host}/{block.tenant}",
            http_client=_VerifyingSession(verify), instance_discovery=False, timeout=block.timeout)
        self.scopes = [f"{block.resource}/.default"]
        self.host = urlsplit(block.graph_url).netloc.lower()
        self._lock = threading.Lock()

    def token(self) -> str:
        with self._lock:
            try:
                result = self.app.acquire_token_for_client(scopes=self.scopes)
            except requests.RequestException as exc:
                raise TransientError(scrub(f"{self.label}: no answer from Entra ID's token endpoint: {type(exc).__name__}",
                                           self.block.secret_values())) from None
            except ValueError as exc:  # msal: an authority whose OpenID configuration cannot be read
                raise PermanentError(scrub(f"{self.label}: Entra ID authority {self.block.authority_host}/{self.block.tenant}: "
                                           f"{exc}", self.block.secret_values())) from None
        if "access_token" not in result:
            detail = scrub(f"{result.get('error')}: {(result.get('error_description') or '').splitlines()[0][:200]}",
                           self.block.secret_values())
            if result.get("error") in ("temporarily_unavailable", "server_error"):
                raise TransientError(f"{self.label}: Entra ID could not issue a token ({detail})")
            raise CredentialsRefusedError(f"{self.label}: Entra ID refused the app's credentials ({detail})", status=401)
        return result["access_token"]

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if urlsplit(request.url).netloc.lower() != self.host:
            raise PermanentError(f"{self.label}: refused to send its token to {urlsplit(request.url).netloc}")
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def refresh(self) -> None:
        with self._lock:
            self.app.remove_tokens_for_client()


class GraphClient:
    def __init__(self, block, label: str):
        self.block, self.label = block, label
        self.auth = MsalAuth(block, label) if block.auth == "app" else BearerAuth(TokenManager(block))
        self._options = dict(secrets=block.secret_values(), ca_bundle=block.ca_bundle, verify=block.verify_tls,
                             timeout=(15, block.request_timeout), pool_size=max(4, 2 * block.transfers))
        self.http = HttpClient(label, base_url=block.graph_url, auth=self.auth,
                               notes={409: "name already exists", 410: "resync required"}, **self._options)
        self._plain: dict[str, HttpClient] = {}
        self._lock = threading.Lock()
        self._drive: str | None = None

    def close(self) -> None:
        self.http.close()
        for client in self._plain.values():
            client.close()

    def plain(self, url: str) -> HttpClient:
        """A token-less client for a pre-authenticated URL (uploadUrl, downloadUrl), per host."""
        host = urlsplit(url).netloc.lower()
        with self._lock:
            if host not in self._plain:
                self._plain[host] = HttpClient(f"{self.label} ({host})", hosts=[url], **self._options)
            return self._plain[host]

    # -- the drive ----------------------------------------------------------------------------------
    def drive_path(self) -> str:
        """'/drives/<id>' of the connection's drive (resolved once)."""
        if self._drive is None:
            b = self.block
            if b.drive_id:
                self._drive = f"/drives/{quote(b.drive_id, safe='!')}"
            else:
                where = f"/sites/{quote(b.site_id, safe=',.')}/drive" if b.site_id else \
                    f"/users/{quote(b.user, safe='@.')}/drive" if b.user else "/me/drive"
                drive = self.json("GET", where, what="drive lookup")
                self._drive = f"/drives/{quote(drive['id'], safe='!')}"
        return self._drive

    def drive(self) -> dict:
        return self.json("GET", self.drive_path(), what="connection check")

    def by_path(self, path: str, tail: str = "") -> str:
        """The URL of an item addressed by its path ('/a/b.pdf'), plus ':/content' and the like."""
        if not path.strip("/"):
            return f"{self.drive_path()}/root{tail.replace(':/', '/', 1) if tail else ''}"
        return f"{self.drive_path()}/root:{quote(path)}:{tail.lstrip(':')}"

    # -- calls --------------------------------------------------------------------------------------
    def json(self, method: str, url: str, *, what: str = "", **kwargs):
        response = self.http.request(method, url, what=what, **kwargs)
        return self.http.json(response, what) if response.content else None

    def item(self, path: str, what: str = "") -> dict | None:
        """An item by path; None when it is not there."""
        response = self.http.request("GET", self.by_path(path), what=what, check=False)
        if response.status_code == 404:
            response.close()
            return None
        error = self.http.status_error(response, what)
        if error is not None:
            raise error
        return response.json()

    def children(self, item_id: str, what: str = "") -> list[dict]:
        url = f"{self.drive_path()}/items/{quote(item_id)}/children?$top=200"
        out: list[dict] = []
        while url:
            page = self.json("GET", url, what=what)
            out += page.get("value", [])
            url = page.get("@odata.nextLink")
        return out
