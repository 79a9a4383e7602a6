"""OAuth2 for every connector and source: valid access tokens, one refresh per connection at a time.

The protocol itself (requests to the token, authorize and revoke endpoints, PKCE) is authlib's; this
module decides when to refresh, serialises refreshes and keeps the block's tokens current.

How a refresh goes (TokenManager):

1. `access_token()` hands out the block's access token while more than `skew_seconds` of it remain
   (Pagero's rule: refresh when fewer than 60 s remain). `refresh()` forces a new one: a 401 from
   the API means the server no longer takes the token we sent.
2. Otherwise it takes the connection's named lock (tasks.locks: a PostgreSQL advisory lock, or a
   file lock beside the SQLite ledger), whose name comes from the block's type and document name.
3. Holding it, it reads the block document again from the Prefect server: another thread, process
   or machine may have refreshed while we waited. If the stored access token is not the one we are
   replacing and has not expired, it is adopted: no call to the token endpoint.
4. Otherwise one token request: the refresh_token grant with the stored (newest) refresh token; the
   client_credentials and password grants simply fetch a new token.
5. The new access token, its expiry and the rotated refresh token are saved to the block
   (Block.save(name, overwrite=True)) before the lock is released.

Why serialised, and why saved before the lock is let go: refresh tokens rotate. Exact Online issues a
new refresh token on every refresh and refuses the old one from then on, and a server may answer the
reuse of an old one by revoking the whole family. Two processes refreshing with the same token: one
wins, the other gets invalid_grant, and the connection may be lost until someone authorises it again.
With the lock, the second holder finds the first one's tokens in the block and uses them.

Onboarding (`docroute connect`, `connect()` here): for the authorization code grant, build the
authorize URL (state, and PKCE if the block says so), take the redirect (on a one-shot listener at
the redirect URI's loopback port, or pasted), check the state, exchange the code, save the tokens.
The client_credentials and password grants fetch a first token. `revoke()` undoes it.

No secret reaches a message, a log line or an exception: every text that could hold one (a server's
error description, a library's exception) goes through tasks.secrets.scrub with the block's secrets.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from pydantic import SecretStr
from requests.auth import AuthBase

from blocks.oauth import OAuth2Block, host_entry
from tasks.errors import (
    CredentialsRefusedError,
    PermanentError,
    TransientError,
)
from tasks.locks import LockTimeout, named_lock
from tasks.secrets import scrub

log = logging.getLogger("docroute.oauth")

LOCK_TIMEOUT = 120.0  # seconds to wait for another process's refresh; a token request takes at most `timeout`
TRANSIENT_STATUSES = {408, 425, 429}  # and every 5xx
# OAuth2 error codes that say "try again later"; every other one refuses the client or the grant (RFC 6749 5.2)
TRANSIENT_ERRORS = {"server_error", "temporarily_unavailable", "slow_down"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _name(block: OAuth2Block) -> str:
    return block.reference() or block.label()


def _connect_hint(block: OAuth2Block) -> str:
    ref = block.reference() or "<type-slug>/<name>"
    return f"run `docroute connect {ref}` again"


class _Unavailable(Exception):
    """A token endpoint answer that means "later" (408, 425, 429, 5xx), raised before authlib parses it."""

    def __init__(self, response: requests.Response):
        super().__init__(response.status_code)
        self.status = response.status_code
        value = response.headers.get("Retry-After", "")
        self.retry_after = float(value) if value.replace(".", "", 1).isdigit() else None


def _check_status(response: requests.Response) -> requests.Response:
    if response.status_code in TRANSIENT_STATUSES or response.status_code >= 500:
        raise _Unavailable(response)
    return response


class _Session(OAuth2Session):
    """authlib's session with the block's TLS setting on every request: a session-level `verify` loses to
    REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment (requests #3829), which would ignore ca_bundle."""

    tls_verify: bool | str = True

    def request(self, method, url, *args, **kwargs):
        kwargs.setdefault("verify", self.tls_verify)
        return super().request(method, url, *args, **kwargs)


def oauth_session(block: OAuth2Block) -> OAuth2Session:
    """An authlib session for the block's authorization server: client authentication, TLS, timeout."""
    secret = block.client_secret.get_secret_value() if block.client_secret else None
    method = block.client_auth if secret else "none"
    session = _Session(
        client_id=block.client_id,
        client_secret=secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        scope=" ".join(block.scopes) or None,
        redirect_uri=block.redirect_uri,
        code_challenge_method="S256" if block.pkce else None,
        default_timeout=block.timeout,
    )
    session.verify = session.tls_verify = (block.ca_bundle or True) if block.verify_tls else False
    session.register_compliance_hook("access_token_response", _check_status)
    session.register_compliance_hook("refresh_token_response", _check_status)
    return session


def _token_call(block: OAuth2Block, what: str, call: Callable[[OAuth2Session], Any]) -> dict:
    """Run one token endpoint request; every failure becomes one of tasks.errors' classes, scrubbed."""
    secrets = block.secret_values()
    name = _name(block)
    try:
        with oauth_session(block) as session:
            token = dict(call(session))
    except _Unavailable as exc:
        raise TransientError(f"{name}: the token endpoint answered HTTP {exc.status} to {what}",
                             retry_after=exc.retry_after, status=exc.status) from None
    except OAuthError as exc:
        detail = scrub(f"{exc.error}: {exc.description}" if exc.description else f"{exc.error}", secrets)
        if exc.error in TRANSIENT_ERRORS:
            raise TransientError(f"{name}: the token endpoint could not answer {what} ({detail})") from None
        raise CredentialsRefusedError(
            f"{name}: the token endpoint refused {what} ({detail}); {_connect_hint(block)} to authorise the connection",
            status=400,
        ) from None
    except requests.HTTPError as exc:  # a 4xx whose body is not an OAuth2 error object
        status = exc.response.status_code if exc.response is not None else None
        raise CredentialsRefusedError(
            f"{name}: the token endpoint refused {what} with HTTP {status}; {_connect_hint(block)} to authorise the connection",
            status=status,
        ) from None
    except requests.exceptions.SSLError as exc:  # the certificate: a retry will not change it
        raise PermanentError(scrub(f"{name}: the token endpoint's TLS certificate is not trusted ({exc}); fix the certificate "
                                   f"or set ca_bundle on the block to the CA that issued it", secrets)) from None
    except requests.RequestException as exc:  # no answer: connection refused or cut, timeout
        raise TransientError(scrub(f"{name}: no answer from the token endpoint to {what}: {type(exc).__name__}: {exc}", secrets)) from None
    except OSError as exc:  # requests' bare OSError (not a RequestException) for a CA bundle path that is not there
        raise PermanentError(scrub(f"{name}: cannot use the CA bundle for the token endpoint: {exc}", secrets)) from None
    except ValueError as exc:  # a 200 that is not a JSON object (a proxy's page)
        raise TransientError(scrub(f"{name}: the token endpoint's answer to {what} is not a token: {exc}", secrets)) from None
    if not token.get("access_token"):
        raise TransientError(f"{name}: the token endpoint's answer to {what} holds no access_token")
    if str(token.get("token_type", "bearer")).lower() != "bearer":
        raise CredentialsRefusedError(f"{name}: the token endpoint issued a {token.get('token_type')!r} token; "
                                      "only bearer tokens are supported")
    return token


def _apply(block: OAuth2Block, token: dict) -> float | None:
    """Put a token endpoint answer into the block; returns the token's lifetime in seconds (None: unknown)."""
    block.access_token = SecretStr(token["access_token"])
    if token.get("refresh_token"):  # RFC 6749 6: a server that rotates sends one; otherwise the old one stays valid
        block.refresh_token = SecretStr(token["refresh_token"])
    lifetime = token.get("expires_in")
    try:
        lifetime = float(lifetime) if lifetime is not None else None
    except (TypeError, ValueError):
        lifetime = None
    block.expires_at = _now() + timedelta(seconds=lifetime) if lifetime is not None else None
    return lifetime


def _copy_tokens(source: OAuth2Block, target: OAuth2Block) -> None:
    target.access_token, target.refresh_token, target.expires_at = source.access_token, source.refresh_token, source.expires_at


def _reload(block: OAuth2Block) -> OAuth2Block:
    """The block document as the Prefect server holds it now."""
    try:
        return type(block).load(block._block_document_name, _sync=True)
    except Exception as exc:  # noqa: BLE001 - the Prefect server unreachable or erring
        raise TransientError(scrub(f"{_name(block)}: could not read the block from the Prefect server: {type(exc).__name__}: {exc}",
                                   block.secret_values())) from None


def _save(block: OAuth2Block, attempts: int = 3) -> None:
    """Save the block's document (overwrite), tried a few times: the tokens in it may exist nowhere else."""
    for attempt in range(attempts):
        try:
            block.save(block._block_document_name, overwrite=True, _sync=True)
            return
        except Exception as exc:  # noqa: BLE001 - the Prefect server unreachable or erring
            if attempt == attempts - 1:
                raise TransientError(scrub(f"{_name(block)}: could not save the new tokens to the Prefect server: "
                                           f"{type(exc).__name__}: {exc}", block.secret_values())) from None
            time.sleep(0.5 * (attempt + 1))


def fetch_token(block: OAuth2Block) -> dict:
    """One token request for the block's grant: refresh_token for authorization_code, else a new token."""
    if block.grant == "client_credentials":
        return _token_call(block, "the client credentials", lambda s: s.fetch_token(block.token_url, grant_type="client_credentials"))
    if block.grant == "password":
        return _token_call(block, "the password grant", lambda s: s.fetch_token(
            block.token_url, grant_type="password",
            username=block.username.get_secret_value(), password=block.password.get_secret_value()))
    if block.refresh_token is None:
        raise CredentialsRefusedError(f"{_name(block)} holds no refresh token: it was never authorised; {_connect_hint(block)}")
    refresh_token = block.refresh_token.get_secret_value()
    return _token_call(block, "the refresh token", lambda s: s.refresh_token(block.token_url, refresh_token=refresh_token))


def lock_name(block: OAuth2Block) -> str:
    """The named lock of a connection's token changes: its block type and document name."""
    return f"oauth2-token:{block.get_block_type_slug()}/{block._block_document_name or id(block)}"


@contextlib.contextmanager
def _locked(block: OAuth2Block, what: str, lock: Callable[..., contextlib.AbstractContextManager] = named_lock,
            timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the block's token lock; another process holding it past `timeout` is a TransientError."""
    try:
        with lock(lock_name(block), timeout=timeout, what=f"{_name(block)} {what}"):
            yield
    except LockTimeout as exc:
        raise TransientError(str(exc)) from None


class TokenManager:
    """Valid access tokens for one OAuth2 block, refreshed under the connection's named lock (module docstring).

    `lock(name, timeout=..., what=...)` is the lock factory (tasks.locks.named_lock); `skew_seconds`
    how long before expiry a token is renewed."""

    def __init__(self, block: OAuth2Block, lock: Callable[..., contextlib.AbstractContextManager] = named_lock,
                 skew_seconds: float = 60, lock_timeout: float = LOCK_TIMEOUT):
        self.block = block
        self.skew_seconds = skew_seconds
        self.lock_timeout = lock_timeout
        self._lock = lock
        self._mutex = threading.Lock()  # this process's threads queue here first, without polling the named lock
        self._lifetime: float | None = None  # of the token we fetched or adopted: the skew is capped at half of it
        self._unsaved: OAuth2Block | None = None  # tokens a refresh got but could not save yet

    @property
    def expires_at(self) -> datetime | None:
        return self.block.expires_at

    def _skew(self) -> float:
        # A token that lives shorter than twice the skew would be "due" the moment it arrives: every call
        # would refresh. Renew such tokens at half their life instead.
        return self.skew_seconds if self._lifetime is None else min(self.skew_seconds, self._lifetime / 2)

    def _fresh(self, block: OAuth2Block, margin: float) -> bool:
        if block.access_token is None:
            return False
        return block.expires_at is None or (block.expires_at - _now()).total_seconds() > margin

    def access_token(self) -> str:
        """A valid access token, refreshed first when it is missing or within the skew of its expiry."""
        if self._unsaved is not None:
            self._retry_save()
        if not self._fresh(self.block, self._skew()):
            with self._mutex:
                if not self._fresh(self.block, self._skew()):  # another thread may have renewed it meanwhile
                    self._renew(self._current())
        return self._current()

    def refresh(self, rejected: str | None = None) -> str:
        """Force a new access token (the remote refused `rejected`, default the current one); returns it."""
        rejected = rejected or self._current()
        with self._mutex:
            if self._current() == rejected or not self._fresh(self.block, 0):
                self._renew(rejected)
        return self._current()

    def _current(self) -> str | None:
        token = self.block.access_token
        return token.get_secret_value() if token is not None else None

    def _renew(self, replacing: str | None) -> None:
        """Replace the access token `replacing` (module docstring, steps 2-5)."""
        if not self.block._block_document_name:  # a block never saved: nothing to share, nowhere to save
            self._lifetime = _apply(self.block, fetch_token(self.block))
            return
        with _locked(self.block, "token refresh", self._lock, self.lock_timeout):
            stored = _reload(self.block)
            stored_token = stored.access_token.get_secret_value() if stored.access_token else None
            if stored_token != replacing and self._fresh(stored, 0):
                _copy_tokens(stored, self.block)
                self._lifetime = (stored.expires_at - _now()).total_seconds() if stored.expires_at else None
                log.info("%s: using the access token another process refreshed, valid until %s",
                         _name(self.block), _until(stored.expires_at))
                return
            token = fetch_token(stored)
            self._lifetime = _apply(stored, token)
            _copy_tokens(stored, self.block)  # this process uses the new token even if the save below fails
            try:
                _save(stored)
            except TransientError as exc:
                self._unsaved = stored
                log.error("%s; this process keeps them and tries again at its next token request (if it ends "
                          "first, %s)", exc, _connect_hint(self.block))
                return
            log.info("%s: access token refreshed, valid until %s", _name(self.block), _until(stored.expires_at))

    def _retry_save(self) -> None:
        """Save tokens a refresh could not save (one try per token request: the token in memory is still good)."""
        with self._mutex, _locked(self.block, "token save", self._lock, self.lock_timeout):
            if self._unsaved is None:
                return
            try:
                _save(self._unsaved, attempts=1)
                self._unsaved = None
            except TransientError as exc:
                log.warning("%s; tried again at the next token request", exc)


def _until(expires_at: datetime | None) -> str:
    return expires_at.isoformat(timespec="seconds") if expires_at else "revoked (the server gave no expiry)"


class BearerAuth(AuthBase):
    """requests auth: "Authorization: Bearer <token>" on requests to the block's hosts, and nowhere else.

    A request to a host outside `allowed_hosts` (default: the block's token_hosts(); each must be one
    of them) raises PermanentError before anything is sent. `refresh()` is the HTTP client's hook
    after a 401: one forced refresh, then the client repeats the request once."""

    def __init__(self, manager: TokenManager, allowed_hosts: Iterable[str] | None = None):
        self.manager = manager
        block_hosts = manager.block.token_hosts()
        self.allowed_hosts = [h.lower() for h in (allowed_hosts if allowed_hosts is not None else block_hosts)]
        for entry in self.allowed_hosts:
            if not host_allowed(entry, block_hosts):
                raise PermanentError(f"{_name(manager.block)}: {entry} is not among the hosts the block allows its token to go to")
        self._sent = threading.local()  # the token this thread sent last: the one a 401 refuses

    def allows(self, url: str) -> bool:
        """An allowed host, over https (plain http only to this machine's loopback: tests, local gateways)."""
        parts = urlsplit(url)
        secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)
        return secure and host_allowed(host_entry(url), self.allowed_hosts)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if not self.allows(request.url):
            parts = urlsplit(request.url)
            why = ("not over https" if host_allowed(host_entry(request.url), self.allowed_hosts)
                   else f"not one of {', '.join(self.allowed_hosts)}")
            raise PermanentError(f"{_name(self.manager.block)}: refused to send its access token to "
                                 f"{parts.scheme}://{host_entry(request.url)}: {why}")
        token = self.manager.access_token()
        self._sent.token = token
        request.headers["Authorization"] = f"Bearer {token}"
        return request

    def refresh(self) -> None:
        """Replace the token the last request of this thread sent (the remote answered 401)."""
        self.manager.refresh(rejected=getattr(self._sent, "token", None))




def host_allowed(entry: str, allowed: Iterable[str]) -> bool:
    """Whether "host[:port]" is covered by an allow-list entry (one without a port covers every port)."""
    host, port = _split_entry(entry)
    for item in allowed:
        a_host, a_port = _split_entry(item)
        if host == a_host and (a_port is None or a_port == port):
            return True
    return False


def _split_entry(entry: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{entry}")
    host = (parts.hostname or "").lower()
    return (f"[{host}]" if ":" in host else host), parts.port


# -- onboarding -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthorizationRequest:
    """One authorization code request: the URL to open, and what checks and completes its answer."""

    url: str
    state: str
    code_verifier: str | None


def authorization_request(block: OAuth2Block) -> AuthorizationRequest:
    """The authorize URL for the block (state, and a PKCE S256 challenge if `block.pkce`)."""
    if block.grant != "authorization_code" or not block.authorize_url:
        raise PermanentError(f"{_name(block)}: the authorization code grant needs grant=authorization_code and an authorize_url")
    verifier = generate_token(64) if block.pkce else None  # RFC 7636: 43-128 unreserved characters
    with oauth_session(block) as session:
        url, state = session.create_authorization_url(block.authorize_url, code_verifier=verifier)
    return AuthorizationRequest(url, state, verifier)


def code_from(answer: str, request: AuthorizationRequest | None = None) -> str:
    """The authorization code in `answer`: a bare code, or the redirect URL (or its query) carrying it.

    A redirect's state must be the request's (no request: a code from an earlier run, unchecked);
    an error in it (access_denied) is a CredentialsRefusedError."""
    answer = answer.strip()
    if not re.search(r"(^|[?&])(code|error)=", answer):  # a bare code (which may hold '=' itself)
        return answer
    query = parse_qs(urlsplit(answer).query if "?" in answer else answer)
    if "error" in query:
        desc = query.get("error_description", [""])[0]
        raise CredentialsRefusedError(f"authorisation refused: {query['error'][0]}{': ' + desc if desc else ''}")
    if "code" not in query:
        raise PermanentError("the answer holds no authorization code")
    if request is not None and query.get("state", [None])[0] != request.state:
        raise PermanentError("the redirect's state does not match this authorisation request (an old or forged "
                             "redirect): open the URL this run printed")
    return query["code"][0]


class RedirectListener:
    """A one-shot HTTP server on the redirect URI's loopback port: catches the browser's redirect.

    Bound when made, so it is listening before the authorize URL is shown. `wait()` returns the full
    redirect URL of the first request to the redirect path (other paths, like /favicon.ico, get 404)."""

    def __init__(self, redirect_uri: str):
        parts = urlsplit(redirect_uri)
        if parts.hostname not in LOOPBACK or parts.scheme != "http":
            raise PermanentError(f"cannot listen for {redirect_uri}: only an http://127.0.0.1 or http://localhost redirect URI")
        self.path = parts.path or "/"
        self.result: str | None = None
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a browser's idle preconnect must not hold the one-shot server

            def log_message(self, *args) -> None:  # the query holds the code: not on stderr
                pass

            def do_GET(self) -> None:
                if urlsplit(self.path).path != listener.path:
                    self.send_error(404)
                    return
                listener.result = f"{parts.scheme}://{parts.netloc}{self.path}"
                body = b"docroute: authorisation received. You can close this window."
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        ipv6 = parts.hostname == "::1"
        try:
            self.server = (_IPv6Server if ipv6 else HTTPServer)(("::1" if ipv6 else "127.0.0.1", parts.port or 80), Handler)
        except OSError as exc:
            raise PermanentError(f"cannot listen on {parts.netloc} for the redirect: {exc.strerror}; use --no-listen") from None

    def wait(self, timeout: float = 300.0) -> str:
        """The redirect URL, once the browser has been sent to it (PermanentError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        try:
            while self.result is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PermanentError(f"no redirect to {self.path} within {timeout:.0f}s")
                self.server.timeout = min(left, 1.0)
                self.server.handle_request()
        finally:
            self.close()
        return self.result

    def close(self) -> None:
        self.server.server_close()  # idempotent: wait() closes it too


class _IPv6Server(HTTPServer):
    address_family = socket.AF_INET6


def _store(block: OAuth2Block, token: dict) -> None:
    """Put first tokens into the block and save it, under the connection's lock (a refresh may be under way)."""
    _apply(block, token)
    with _locked(block, "token save"):
        _save(block)


def connect(block: OAuth2Block, *, code: str | None = None, listen: bool = True, timeout: float = 300.0,
            say: Callable[[str], None] = print, ask: Callable[[str], str] = input) -> datetime | None:
    """Authorise the block and save its first tokens; returns when the access token expires.

    authorization_code: `code` given, exchange it (no PKCE then: the verifier belongs to the run that
    showed the URL); else show the authorize URL (`say`) and take the redirect on a listener
    (`listen`) or the pasted code or redirect URL (`ask`). client_credentials and password: fetch a
    first token."""
    if block.grant != "authorization_code":
        token = fetch_token(block)
    else:
        if code is not None:
            if block.pkce:
                raise PermanentError(f"{_name(block)} uses PKCE: a code cannot be given, run connect without --code")
            request, answer = None, code
        else:
            request = authorization_request(block)
            # listening needs a loopback redirect URI; with another one the user pastes where the browser went
            listen = listen and urlsplit(block.redirect_uri).hostname in LOOPBACK
            listener = RedirectListener(block.redirect_uri) if listen else None  # bound before the URL is shown
            try:
                say(f"Open this URL in a browser and authorise docroute:\n{request.url}")
                if listener is not None:
                    say(f"Waiting for the redirect to {block.redirect_uri} ...")
                    answer = listener.wait(timeout)
                else:
                    answer = ask("Paste the URL the browser was redirected to (or the code): ")
            finally:
                if listener is not None:
                    listener.close()
        the_code = code_from(answer, request)
        verifier = request.code_verifier if request is not None else None
        token = _token_call(block, "the authorization code", lambda s: s.fetch_token(
            block.token_url, grant_type="authorization_code", code=the_code,
            **({"code_verifier": verifier} if verifier else {})))
    _store(block, token)
    log.info("%s: authorised, access token valid until %s", _name(block), _until(block.expires_at))
    return block.expires_at


def _error_code(response: requests.Response) -> str | None:
    try:
        return response.json().get("error")
    except (ValueError, AttributeError):
        return None


def revoke(block: OAuth2Block) -> None:
    """Revoke the block's tokens at its revoke_url (RFC 7009) and clear them from the block."""
    if not block.revoke_url:
        raise PermanentError(f"{_name(block)} has no revoke_url")
    with _locked(block, "token revocation"):
        stored = _reload(block) if block._block_document_name else block
        with oauth_session(stored) as session:
            for hint in ("refresh_token", "access_token"):
                value = getattr(stored, hint)
                if value is None:
                    continue
                try:
                    response = session.revoke_token(stored.revoke_url, token=value.get_secret_value(), token_type_hint=hint)
                except requests.RequestException as exc:
                    raise TransientError(scrub(f"{_name(block)}: no answer from the revoke endpoint: {type(exc).__name__}: {exc}",
                                               stored.secret_values())) from None
                if response.status_code == 400 and _error_code(response) == "unsupported_token_type":
                    continue  # RFC 7009 2.2.1: the server does not revoke this kind of token (access tokens, often)
                status = response.status_code
                if status >= 400:
                    cls = TransientError if status in TRANSIENT_STATUSES or status >= 500 else PermanentError
                    raise cls(f"{_name(block)}: the revoke endpoint answered HTTP {status}", status=status)
        stored.access_token = stored.refresh_token = stored.expires_at = None
        if stored._block_document_name:
            _save(stored)
        _copy_tokens(stored, block)
    log.info("%s: tokens revoked and cleared", _name(block))

