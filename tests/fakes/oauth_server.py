"""A local OAuth2 authorization server (RFC 6749, 7636 PKCE, 7009 revocation) with a protected API route.

What the reference (shared/reference/connectors.md 0, 1, 2, 5) says the real ones do:

- /authorize: checks client_id and the registered redirect_uri, then redirects with code and state
  (or error=access_denied when `deny` is set). Codes are single-use and bound to the client, the
  redirect URI and, if one was given, the PKCE S256 challenge.
- /token, form-encoded only (a raw '#' in the body is refused: the Infor gateway's saak holds one and
  must arrive as %23), client authentication by HTTP basic or form fields, not both:
  authorization_code; refresh_token, rotating (Exact: every refresh issues a new refresh token and the
  old one fails from then on; its reuse is invalid_grant and, with `revoke_family_on_reuse`, revokes
  every token of that authorisation); client_credentials; password (`users`).
- /revoke (RFC 7009), and /api/me: 200 for a live bearer token, 401 for an expired, revoked or unknown one.

`expires_in` (seconds) and `token_delay` (a slow token endpoint) can change at any time; `grants`
counts /token calls per grant type, `errors` lists every error answered; FakeAPI.fault adds 500s,
cut connections and delays.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import unquote_plus, urlencode, urlsplit, urlunsplit

from blocks.oauth import OAuth2Connection
from tests.fakes.base import FakeAPI, Request, Response

FORM_ENCODED = re.compile(r"^[A-Za-z0-9._~%+=&*-]*$")  # what application/x-www-form-urlencoded leaves raw


class FakeOAuthConnection(OAuth2Connection):
    """A connection block type for the tests (registered at run time, never in tasks/registry.py)."""

    _block_type_name: ClassVar[str] = "Fake OAuth Connection"
    _block_type_slug: ClassVar[str] = "fake-oauth-connection"


@dataclass
class Family:
    """Every token issued from one authorisation (one code, one client credentials or password grant)."""

    client_id: str
    subject: str
    scope: str
    revoked: bool = False
    access: dict[str, float] = field(default_factory=dict)  # access token -> expiry (time.time())
    refresh: str | None = None  # the one live refresh token
    spent: set[str] = field(default_factory=set)  # refresh tokens already used


class OAuthServer(FakeAPI):
    def __init__(self, *, client_id: str = "docroute-client", client_secret: str | None = None,
                 redirect_uris: tuple[str, ...] = (), users: dict[str, str] | None = None, expires_in: float = 600,
                 revoke_family_on_reuse: bool = True, token_delay: float = 0.0, name: str = "OAuth2 server",
                 tls=None):
        super().__init__(tls=tls, name=name)
        self.clients: dict[str, str | None] = {client_id: client_secret if client_secret is not None else secrets.token_urlsafe(24)}
        self.client_id = client_id
        self.redirect_uris = set(redirect_uris)
        self.users = dict(users or {})
        self.expires_in = expires_in
        self.revoke_family_on_reuse = revoke_family_on_reuse
        self.token_delay = token_delay
        self.deny = False  # /authorize answers error=access_denied
        self.families: list[Family] = []
        self.codes: dict[str, dict] = {}
        self.grants: Counter[str] = Counter()
        self.errors: list[tuple[str, str]] = []  # (grant_type, error)
        self.client_auth_methods: list[str] = []  # "basic" or "post", per authenticated /token call
        self.usernames: list[str] = []  # as the password grant received them
        self.raw_bodies: list[bytes] = []
        self.pkce_verified = 0
        self.route("GET", "/authorize")(self._authorize)
        self.route("POST", "/token")(self._token)
        self.route("POST", "/revoke")(self._revoke)
        self.route("GET", "/api/me")(self._me)

    @property
    def client_secret(self) -> str | None:
        return self.clients[self.client_id]

    # -- test helpers -------------------------------------------------------------------------------
    def issue(self, subject: str = "user", refresh: bool = True) -> dict:
        """Tokens of a new authorisation, as if a code had been exchanged (no /token call counted)."""
        with self.lock:
            fam = Family(self.client_id, subject, "all")
            self.families.append(fam)
            return self._tokens(fam, refresh)

    def family_of(self, token: str) -> Family | None:
        with self.lock:
            for fam in self.families:
                if token in fam.access or token == fam.refresh or token in fam.spent:
                    return fam
        return None

    def live(self, access_token: str) -> bool:
        fam = self.family_of(access_token)
        return fam is not None and not fam.revoked and fam.access.get(access_token, 0) > time.time()

    def invalidate_access_tokens(self) -> None:
        """Every access token stops working now (as a server restart or a key rotation would do)."""
        with self.lock:
            for fam in self.families:
                fam.access = dict.fromkeys(fam.access, 0.0)

    # -- endpoints ----------------------------------------------------------------------------------
    def _authorize(self, req: Request) -> Response:
        client_id, redirect_uri = req.arg("client_id"), req.arg("redirect_uri")
        # RFC 6749 4.1.2.1: a bad client or redirect URI is shown to the user, never redirected to
        if client_id not in self.clients:
            return Response.text("unknown client_id", 400)
        if redirect_uri not in self.redirect_uris:
            return Response.text("redirect_uri is not registered for this client", 400)
        state = req.arg("state")
        if req.arg("response_type") != "code":
            return self._redirect(redirect_uri, error="unsupported_response_type", state=state)
        if self.deny:
            return self._redirect(redirect_uri, error="access_denied", error_description="the user said no", state=state)
        challenge, method = req.arg("code_challenge"), req.arg("code_challenge_method", "plain")
        if challenge and method != "S256":
            return self._redirect(redirect_uri, error="invalid_request", error_description="only S256", state=state)
        code = secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = {"client_id": client_id, "redirect_uri": redirect_uri, "challenge": challenge,
                                "scope": req.arg("scope", ""), "expires": time.time() + 60, "family": None}
        return self._redirect(redirect_uri, code=code, state=state)

    @staticmethod
    def _redirect(uri: str, **params: str | None) -> Response:
        parts = urlsplit(uri)
        query = "&".join(q for q in (parts.query, urlencode({k: v for k, v in params.items() if v is not None})) if q)
        return Response(302, {"Location": urlunsplit(parts._replace(query=query)), "Content-Length": "0"})

    def _token(self, req: Request) -> Response:
        if self.token_delay:
            time.sleep(self.token_delay)  # outside the lock: concurrent requests overlap, as at a real server
        form = req.form()
        grant = form.get("grant_type", "")
        with self.lock:
            self.grants[grant] += 1
            self.raw_bodies.append(req.body)
            if not req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                return self._error(grant, "invalid_request", "the body must be application/x-www-form-urlencoded")
            if not FORM_ENCODED.match(req.body.decode("latin-1")):
                return self._error(grant, "invalid_request", "the body is not form-encoded")
            client = self._client(req, form, grant)
            if isinstance(client, Response):
                return client
            handler = {"authorization_code": self._code_grant, "refresh_token": self._refresh_grant,
                       "client_credentials": self._client_grant, "password": self._password_grant}.get(grant)
            if handler is None:
                return self._error(grant, "unsupported_grant_type", f"grant_type {grant!r}")
            return handler(client, form)

    def _client(self, req: Request, form: dict[str, str], grant: str) -> str | Response:
        """The authenticated client id (RFC 6749 2.3.1), or the error answer."""
        header = req.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            if "client_secret" in form:
                return self._error(grant, "invalid_request", "more than one client authentication method")
            try:
                raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            except ValueError:
                return self._error(grant, "invalid_client", "malformed basic credentials", 401)
            client_id, _, secret = raw.partition(":")
            client_id, secret, method = unquote_plus(client_id), unquote_plus(secret), "basic"
        elif "client_id" in form:
            client_id, secret, method = form["client_id"], form.get("client_secret"), "post"
        else:
            return self._error(grant, "invalid_client", "no client authentication", 401)
        known = self.clients.get(client_id, "")
        if client_id not in self.clients or not secrets.compare_digest(known or "", secret or ""):
            # a public client (PKCE, no secret) is not registered here: every client has a secret
            return self._error(grant, "invalid_client", "client authentication failed", 401,
                               {"WWW-Authenticate": 'Basic realm="token"'} if method == "basic" else None)
        self.client_auth_methods.append(method)
        return client_id

    def _code_grant(self, client_id: str, form: dict[str, str]) -> Response:
        entry = self.codes.get(form.get("code", ""))
        if entry is None or entry["client_id"] != client_id or entry["expires"] < time.time():
            return self._error("authorization_code", "invalid_grant", "unknown or expired code")
        if entry["family"] is not None:  # RFC 6749 4.1.2: a code used twice revokes what it gave
            entry["family"].revoked = True
            return self._error("authorization_code", "invalid_grant", "code already used")
        if form.get("redirect_uri") != entry["redirect_uri"]:
            return self._error("authorization_code", "invalid_grant", "redirect_uri differs from the authorization request")
        if entry["challenge"]:
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not verifier or not secrets.compare_digest(digest, entry["challenge"]):
                return self._error("authorization_code", "invalid_grant", "PKCE verification failed")
            self.pkce_verified += 1
        fam = Family(client_id, "user", entry["scope"])
        self.families.append(fam)
        entry["family"] = fam
        return Response.json(self._tokens(fam, True), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _refresh_grant(self, client_id: str, form: dict[str, str]) -> Response:
        token = form.get("refresh_token", "")
        fam = self.family_of(token)
        if fam is None or fam.client_id != client_id or fam.revoked:
            return self._error("refresh_token", "invalid_grant", "unknown or revoked refresh token")
        if token in fam.spent:
            if self.revoke_family_on_reuse:  # Exact: a reused refresh token may cost the whole authorisation
                fam.revoked = True
            # echoing the token, as some servers do: the client must scrub it from its messages
            return self._error("refresh_token", "invalid_grant", f"refresh token {token} already used")
        fam.spent.add(token)
        return Response.json(self._tokens(fam, True), headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _client_grant(self, client_id: str, form: dict[str, str]) -> Response:
        fam = Family(client_id, client_id, form.get("scope", ""))
        self.families.append(fam)
        return Response.json(self._tokens(fam, False), headers={"Cache-Control": "no-store"})  # RFC 6749 4.4.3: no refresh token

    def _password_grant(self, client_id: str, form: dict[str, str]) -> Response:
        username, password = form.get("username", ""), form.get("password", "")
        self.usernames.append(username)
        if username not in self.users or not secrets.compare_digest(self.users[username], password):
            return self._error("password", "invalid_grant", f"wrong password for {username}")  # echoed: to be scrubbed
        fam = Family(client_id, username, form.get("scope", ""))
        self.families.append(fam)
        return Response.json(self._tokens(fam, False), headers={"Cache-Control": "no-store"})

    def _tokens(self, fam: Family, refresh: bool) -> dict:
        access = secrets.token_urlsafe(24)
        fam.access[access] = time.time() + self.expires_in
        out = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in}
        if fam.scope:
            out["scope"] = fam.scope
        if refresh:
            fam.refresh = secrets.token_urlsafe(24)
            out["refresh_token"] = fam.refresh
        return out

    def _error(self, grant: str, error: str, description: str, status: int = 400, headers: dict | None = None) -> Response:
        self.errors.append((grant, error))
        return Response.json({"error": error, "error_description": description}, status,
                             {"Cache-Control": "no-store", **(headers or {})})

    def _revoke(self, req: Request) -> Response:
        form = req.form()
        with self.lock:
            self.grants["revoke"] += 1
            client = self._client(req, form, "revoke")
            if isinstance(client, Response):
                return client
            fam = self.family_of(form.get("token", ""))
            if fam is not None and fam.client_id == client:
                if form["token"] in fam.access:
                    fam.access[form["token"]] = 0.0
                else:  # RFC 7009 2.1: revoking a refresh token ends the authorisation, its access tokens too
                    fam.revoked = True
            return Response(200)  # RFC 7009 2.2: also for a token that was unknown or already revoked

    def _me(self, req: Request) -> Response:
        header = req.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if not self.live(token):
            return Response.json({"error": "invalid_token"}, 401, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        fam = self.family_of(token)
        return Response.json({"client_id": fam.client_id, "sub": fam.subject})
