"""The Google Drive v3 client shared by the Google Drive connector and source.

google-api-python-client (the static discovery document it ships: no discovery request) over a
requests transport (`RequestsHttp`), pointed at the connection's `api_endpoint` (client_options),
with google-auth credentials:
a service account (its key's token_uri; `delegated_user` as the JWT subject for domain-wide
delegation) or a user's tokens from tasks/oauth.py (refresh serialised, tokens kept in the block),
wrapped as a google.auth Credentials. Each thread builds its own service (the library's objects
are not thread-safe). Requests are retried by the library on 403 rateLimitExceeded / userRateLimitExceeded, 429
and 5xx (`retries`, randomised exponential backoff); what is left is classified into tasks.errors.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
from datetime import timezone

import google.auth.credentials
import requests
import requests.adapters
import google.auth.exceptions
import httplib2
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from tasks.errors import CredentialsRefusedError, PermanentError, RemoteError, TransientError
from tasks.oauth import TokenManager
from tasks.secrets import scrub

DRIVE_SCOPE = "https://www.googleapis.com/auth/drive"
FOLDER = "application/vnd.google-apps.folder"
FIELDS = "id,name,mimeType,parents,size,md5Checksum,appProperties,properties,trashed,modifiedTime,headRevisionId,driveId"
RATE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "backendError"}
TRANSPORT_ERRORS = (httplib2.HttpLib2Error, OSError, socket.timeout)


def q_string(value: str) -> str:
    """A value inside '...' of a Drive query."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


class RequestsHttp:
    """The transport google-api-python-client takes ("an instance of httplib2.Http or something that acts like it"),
    over requests: httplib2 sends a request again by itself when the answer is lost (a POST too: a multipart
    create repeated, a second file), and its CA setting is per object only. Here nothing is repeated below
    the connector, TLS is verified per request (REQUESTS_CA_BUNDLE cannot override it), redirects are
    not followed (a resumable session's 308 is an answer), and a broken connection is a ConnectionError."""

    def __init__(self, verify: bool | str, timeout: float):
        self.verify, self.timeout = verify, timeout
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def request(self, uri, method="GET", body=None, headers=None, redirections=None, connection_type=None):
        try:
            r = self.session.request(method, uri, data=body, headers=headers, timeout=(15, self.timeout), verify=self.verify,
                                     allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            cause = exc.__context__ or exc
            raise ssl.SSLCertVerificationError(str(cause)) from None
        except requests.Timeout as exc:
            raise socket.timeout(f"no answer within {self.timeout:g} s") from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise ConnectionError(f"connection broken: {type(exc).__name__}") from None
        response = httplib2.Response({"status": r.status_code, **{k.lower(): v for k, v in r.headers.items()}})
        response.reason = r.reason
        return response, r.content

    def close(self) -> None:
        self.session.close()


class _ManagerCredentials(google.auth.credentials.Credentials):
    """google.auth credentials whose tokens come from tasks.oauth.TokenManager (user OAuth)."""

    def __init__(self, manager: TokenManager):
        super().__init__()
        self.manager = manager

    def refresh(self, request) -> None:
        self.token = self.manager.access_token() if self.token is None else self.manager.refresh(rejected=self.token)
        expires = self.manager.expires_at
        self.expiry = expires.astimezone(timezone.utc).replace(tzinfo=None) if expires else None


def reason_of(exc: HttpError) -> str:
    try:
        detail = json.loads(exc.content.decode("utf-8", "replace"))["error"]
        errors = detail.get("errors") or [{}]
        return errors[0].get("reason") or detail.get("status") or ""
    except (ValueError, KeyError, AttributeError, TypeError):
        return ""


class DriveClient:
    def __init__(self, block, label: str):
        self.block, self.label = block, label
        self.secrets = block.secret_values()
        if block.auth == "service_account":
            from google.oauth2 import service_account

            self.credentials = service_account.Credentials.from_service_account_info(
                block.sa_info(), scopes=[DRIVE_SCOPE], subject=block.delegated_user or None)
        else:
            self.credentials = _ManagerCredentials(TokenManager(block))
        self._local = threading.local()

    def close(self) -> None:
        self._local = threading.local()

    def service(self):
        service = getattr(self._local, "service", None)
        if service is None:
            b = self.block
            verify = b.ca_bundle if (b.verify_tls and b.ca_bundle) else bool(b.verify_tls)
            authed = AuthorizedHttp(self.credentials, http=RequestsHttp(verify, b.request_timeout))
            service = build("drive", "v3", http=authed, client_options={"api_endpoint": b.api_endpoint},
                            static_discovery=True, cache_discovery=False)
            self._local.service = service
        return service

    # -- errors -------------------------------------------------------------------------------------
    def error(self, exc: BaseException, what: str) -> RemoteError:
        """What a failure of the library means (tasks.errors), scrubbed."""
        where = f"{what}: {self.label}" if what else self.label
        if isinstance(exc, RemoteError):
            return exc
        if isinstance(exc, HttpError):
            status, reason = exc.resp.status, reason_of(exc)
            text = scrub(f"{where} answered {status} {reason}: {exc._get_reason()[:200]}", self.secrets)
            if status == 401:
                return CredentialsRefusedError(text, status=status)
            if status in (408, 429) or status >= 500 or (status == 403 and reason in RATE_REASONS):
                return TransientError(text, status=status)
            return PermanentError(text, status=status)
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return CredentialsRefusedError(scrub(f"{where}: Google refused the credentials: {exc}", self.secrets)[:400])
        if isinstance(exc, google.auth.exceptions.TransportError):
            return TransientError(scrub(f"{where}: no answer from Google's token endpoint: {exc}", self.secrets)[:400])
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentError(f"{where}: TLS certificate not accepted: {exc.verify_message}; set ca_bundle")
        if isinstance(exc, TRANSPORT_ERRORS):
            return TransientError(scrub(f"{where}: connection failed: {type(exc).__name__}: {exc}", self.secrets)[:400])
        return TransientError(scrub(f"{where}: unexpected {type(exc).__name__}: {exc}", self.secrets)[:400])

    def run(self, request, what: str = ""):
        try:
            return request.execute(num_retries=self.block.retries)
        except (HttpError, google.auth.exceptions.GoogleAuthError, *TRANSPORT_ERRORS) as exc:
            raise self.error(exc, what) from None

    # -- calls --------------------------------------------------------------------------------------
    def drive_kwargs(self, listing: bool = False) -> dict:
        kwargs = {"supportsAllDrives": True}
        if listing:
            kwargs["includeItemsFromAllDrives"] = True
            if self.block.shared_drive_id:
                kwargs.update(corpora="drive", driveId=self.block.shared_drive_id)
        return kwargs

    def list(self, q: str, what: str = "", fields: str = FIELDS) -> list[dict]:
        out: list[dict] = []
        token = None
        while True:
            page = self.run(self.service().files().list(q=q, fields=f"nextPageToken, files({fields})", pageSize=1000,
                                                        pageToken=token, **self.drive_kwargs(listing=True)), what)
            out += page.get("files", [])
            token = page.get("nextPageToken")
            if not token:
                return out

    def base_folder(self) -> str:
        return self.block.folder_id or self.block.shared_drive_id or "root"

    def child_folder(self, parent: str, name: str, create: bool, what: str = "") -> str | None:
        q = f"'{q_string(parent)}' in parents and name = '{q_string(name)}' and mimeType = '{FOLDER}' and trashed = false"
        found = self.list(q, what, fields="id,name")
        if found:
            return found[0]["id"]
        if not create:
            return None
        made = self.run(self.service().files().create(body={"name": name, "mimeType": FOLDER, "parents": [parent]},
                                                      fields="id", supportsAllDrives=True), what)
        return made["id"]
