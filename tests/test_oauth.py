"""The OAuth2 layer (tasks/oauth.py, blocks/oauth.py, `docroute connect`) against a local RFC 6749
server (tests/fakes/oauth_server.py) and the session's real Prefect server, where the blocks live.

Nothing of ours is replaced: the token server is a real HTTP server, the blocks are saved to and
loaded from Prefect, the locks are the ledger's (SQLite file lock, PostgreSQL advisory lock), and the
two-process test runs two Python processes. Every test ends by checking that no secret (client
secret, password, any token the server issued) reached a log record, the output or an exception.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from prefect.blocks.core import Block

from blocks.local_folder import LocalFolderConnection
from blocks.oauth import host_entry
from flows import cli
from tasks import oauth, registry
from tasks.errors import CredentialsRefusedError, PermanentError, TransientError
from tasks.locks import named_lock
from tasks.oauth import BearerAuth, TokenManager
from tasks.settings import get_settings
from tests.fakes.base import FakeAPI, Fault, Response
from tests.fakes.oauth_server import FakeOAuthConnection, OAuthServer
from tests.net import free_port

REPO = Path(__file__).resolve().parent.parent
SLUG = FakeOAuthConnection.get_block_type_slug()
USER = f"TST_TENANT#SAAK-{uuid.uuid4().hex[:8]}"  # an Infor service account key begins with TENANT#
PASSWORD = f"sask-{uuid.uuid4().hex}"
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"




@pytest.fixture
def env(tmp_path, prefect_server, monkeypatch) -> str:
    """The named locks' ledger in tmp_path, and the test block type known to tasks.registry."""
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("DOCROUTE_LEDGER_URL", ledger)
    monkeypatch.setenv("DOCROUTE_HOME", str(tmp_path / "home"))
    monkeypatch.setitem(registry.BLOCK_TYPES, SLUG, registry.BlockType(SLUG, "tests.fakes.oauth_server:FakeOAuthConnection"))
    get_settings.cache_clear()
    yield ledger
    get_settings.cache_clear()


@pytest.fixture
def server():
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    with OAuthServer(client_secret=f"cs-{uuid.uuid4().hex}", redirect_uris=(redirect,), users={USER: PASSWORD}) as s:
        s.redirect_uri = redirect
        yield s


@pytest.fixture
def no_leaks(server, caplog, capfd):
    """Texts to check (outputs, formatted exceptions); with every log record and the test's stdout and
    stderr, they must hold none of the secrets: the client secret, the password, any token issued."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    yield texts
    captured = capfd.readouterr()
    shown = "\n".join([caplog.text, captured.out, captured.err, *texts])
    secrets = [server.client_secret, PASSWORD]
    for fam in server.families:
        secrets += [*fam.access, *fam.spent, *([fam.refresh] if fam.refresh else [])]
    leaked = [s for s in secrets if s and s in shown]
    assert not leaked, f"{len(leaked)} secret(s) shown"


def make_block(server: OAuthServer, **fields) -> FakeOAuthConnection:
    """A block for the server's client, saved to Prefect under a unique name."""
    values = dict(client_id=server.client_id, client_secret=server.client_secret, token_url=f"{server.url}/token",
                  authorize_url=f"{server.url}/authorize", revoke_url=f"{server.url}/revoke", redirect_uri=server.redirect_uri)
    block = FakeOAuthConnection(**{**values, **fields})
    block.save(f"oauth-{uuid.uuid4().hex[:12]}")
    return block


def authorised(server: OAuthServer, expires_in: float | None = None, **fields) -> FakeOAuthConnection:
    """A block holding the tokens of a fresh authorisation; `expires_in` overrides what the block believes."""
    tokens = server.issue()
    left = server.expires_in if expires_in is None else expires_in
    return make_block(server, access_token=tokens["access_token"], refresh_token=tokens["refresh_token"],
                      expires_at=datetime.now(timezone.utc) + timedelta(seconds=left), **fields)


def stored(block: Block) -> FakeOAuthConnection:
    """The block as the Prefect server holds it now."""
    return FakeOAuthConnection.load(block._block_document_name)


def secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def call(session: requests.Session, url: str, auth: BearerAuth) -> requests.Response:
    """The protocol of docroute's HTTP client (tasks/http.py): on a 401, auth.refresh() once, then one repeat."""
    response = session.get(url, auth=auth, timeout=10)
    if response.status_code == 401 and hasattr(auth, "refresh"):
        auth.refresh()
        response = session.get(url, auth=auth, timeout=10)
    return response


def in_thread(fn, *args) -> threading.Thread:
    """A thread that runs `fn` in a copy of this context (the Prefect settings), as Prefect's task runners do."""
    return threading.Thread(target=contextvars.copy_context().run, args=(fn, *args))


class Terminal(io.StringIO):
    """stdout for `docroute connect` run in this process: a second thread waits for the URL it prints."""

    def __init__(self):
        super().__init__()
        self.changed = threading.Condition()

    def write(self, text: str) -> int:
        with self.changed:
            n = super().write(text)
            self.changed.notify_all()
            return n

    def url(self, timeout: float = 30) -> str:
        with self.changed:
            found = self.changed.wait_for(lambda: re.search(r"^(http\S+/authorize\?\S+)$", self.getvalue(), re.M), timeout)
        assert found, f"no authorize URL printed: {self.getvalue()!r}"
        return found.group(1)


def run_connect(args: list[str], browser) -> tuple[int, str, str, list]:
    """`docroute connect ...` in this process while `browser(url)` acts in another thread, as a user would."""
    out, err, results = Terminal(), io.StringIO(), []

    def user() -> None:
        try:
            results.append(browser(out.url()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results.append(exc)

    thread = threading.Thread(target=user, daemon=True)
    thread.start()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["connect", *args])
    thread.join(30)
    return code, out.getvalue(), err.getvalue(), results


# -- docroute connect -------------------------------------------------------------------------------

def test_connect_authorization_code_with_pkce_catches_the_redirect(env, server, no_leaks):
    block = make_block(server, pkce=True, scopes=["all"])
    ref = block.reference()
    code, out, err, results = run_connect([ref, "--timeout", "60"], lambda url: (url, requests.get(url, timeout=30)))
    no_leaks += [out, err]
    assert code == 0, err
    url, answer = results[0]
    query = parse_qs(urlsplit(url).query)
    assert query["code_challenge_method"] == ["S256"] and query["state"] and query["scope"] == ["all"]
    assert answer.history[0].status_code == 302 and answer.status_code == 200  # the fake redirected to the listener
    assert "authorisation received" in answer.text
    assert server.grants == {"authorization_code": 1} and server.pkce_verified == 1 and server.errors == []
    saved = stored(block)
    fam = server.family_of(secret(saved.access_token))
    assert server.live(secret(saved.access_token)) and secret(saved.refresh_token) == fam.refresh
    assert f"tokens saved to {ref}, access token valid until {saved.expires_at.isoformat(timespec='seconds')}" in out


@pytest.mark.parametrize("tampered", [False, True], ids=["pasted-redirect", "forged-state"])
def test_connect_no_listen_reads_the_redirect_url_and_checks_its_state(env, server, no_leaks, monkeypatch, tampered):
    block = make_block(server)
    read, write = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(read))

    def paste(url: str) -> None:
        location = requests.get(url, allow_redirects=False, timeout=10).headers["Location"]
        if tampered:
            location = location.replace("state=", "state=forged")
        os.write(write, f"{location}\n".encode())
        os.close(write)

    code, out, err, results = run_connect([block.reference(), "--no-listen"], paste)
    no_leaks += [out, err]
    assert results == [None]
    if tampered:
        assert code == 1 and "state does not match" in err
        assert server.grants == {} and stored(block).access_token is None  # the code was never exchanged
    else:
        assert code == 0, err
        assert server.grants == {"authorization_code": 1}
        assert server.live(secret(stored(block).access_token))


def test_connect_with_a_code_exchanges_it_once(env, server, no_leaks):
    block = make_block(server)
    request = oauth.authorization_request(block)
    location = requests.get(request.url, allow_redirects=False, timeout=10).headers["Location"]
    the_code = parse_qs(urlsplit(location).query)["code"][0]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert cli.main(["connect", block.reference(), f"--code={the_code}"]) == 0
        first = secret(stored(block).access_token)
        assert server.live(first)
        # RFC 6749 4.1.2: a code is used once; using it again fails and revokes what it gave
        assert cli.main(["connect", block.reference(), f"--code={the_code}"]) == 1
    no_leaks += [out.getvalue(), err.getvalue()]
    assert "invalid_grant" in err.getvalue() and f"docroute connect {block.reference()}" in err.getvalue()
    assert not server.live(first)


def test_connect_reports_a_refused_authorisation(env, server, no_leaks):
    server.deny = True
    block = make_block(server)
    code, out, err, results = run_connect([block.reference(), "--timeout", "60"], lambda url: requests.get(url, timeout=30))
    no_leaks += [out, err]
    assert code == 1 and "access_denied" in err
    assert server.grants == {} and stored(block).access_token is None


def test_connect_refuses_a_block_that_is_not_oauth2(env, tmp_path, capsys):
    name = f"plain-{uuid.uuid4().hex[:8]}"
    LocalFolderConnection(base_folder=str(tmp_path)).save(name)
    assert cli.main(["connect", f"local-folder-connection/{name}"]) == 2
    assert "is not an OAuth2 connection" in capsys.readouterr().err


# -- the grants ---------------------------------------------------------------------------------------

def test_client_credentials_grant(env, server, no_leaks):
    block = make_block(server, grant="client_credentials")
    assert cli.main(["connect", block.reference()]) == 0
    saved = stored(block)
    assert server.grants == {"client_credentials": 1} and saved.refresh_token is None
    auth = BearerAuth(TokenManager(saved))
    with requests.Session() as session:
        assert session.get(f"{server.url}/api/me", auth=auth, timeout=10).json() == {"client_id": server.client_id, "sub": server.client_id}
        server.invalidate_access_tokens()
        assert call(session, f"{server.url}/api/me", auth).status_code == 200
    assert server.grants == {"client_credentials": 2}  # a new token by the same grant: no refresh token involved
    assert server.client_auth_methods == ["basic", "basic"]


def test_the_block_s_ca_bundle_is_used_whatever_the_environment_says(env, tmp_path, monkeypatch, no_leaks):
    import certifi

    from tests.connectors.harness_webhook import server_tls_context
    from tests.fakes.base import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # the public CAs: would win over a session-level verify
    with OAuthServer(client_secret=f"cs-{uuid.uuid4().hex}", tls=server_tls_context(cert, key)) as tls_server:
        tls_server.redirect_uri = "http://127.0.0.1:8765/callback"
        block = make_block(tls_server, grant="client_credentials", ca_bundle=str(cert))
        assert TokenManager(block).access_token()  # trusted through the block's own CA bundle
        assert tls_server.grants == {"client_credentials": 1}
        untrusted = make_block(tls_server, grant="client_credentials")  # no ca_bundle: the self-signed server is refused
        with pytest.raises(PermanentError, match="TLS certificate is not trusted") as info:
            TokenManager(untrusted).access_token()
        no_leaks.append(str(info.value))


def test_password_grant_form_encodes_a_hash_in_the_username(env, server, no_leaks):
    block = make_block(server, grant="password", client_auth="client_secret_post", username=USER, password=PASSWORD)
    token = TokenManager(block).access_token()
    assert server.usernames == [USER]  # the '#' and what follows it arrived
    assert b"%23" in server.raw_bodies[-1]  # form-encoded, as the Infor gateway wants (the fake refuses a raw '#')
    assert server.client_auth_methods == ["post"]  # client_id and client_secret in the body
    assert server.live(token) and secret(stored(block).access_token) == token


def test_a_wrong_password_is_refused_without_showing_it(env, server, no_leaks):
    block = make_block(server, grant="password", username=USER, password=f"wrong-{PASSWORD}")
    with pytest.raises(CredentialsRefusedError) as info:
        TokenManager(block).access_token()
    no_leaks.append("".join(traceback.format_exception(info.value)))
    assert f"wrong-{PASSWORD}" not in str(info.value) and USER not in str(info.value)
    assert block.reference() in str(info.value) and "invalid_grant" in str(info.value)


# -- refreshing -------------------------------------------------------------------------------------

def test_a_token_is_refreshed_only_within_the_skew_of_its_expiry(env, server, no_leaks):
    server.expires_in = 3600
    fresh = authorised(server, expires_in=120)  # 120 s left: more than the 60 s skew
    token = secret(fresh.access_token)
    assert TokenManager(fresh).access_token() == token and server.grants == {}
    due = authorised(server, expires_in=59)  # still valid at the server, but within the skew
    old = secret(due.access_token)
    new = TokenManager(due).access_token()
    assert new != old and server.grants == {"refresh_token": 1} and server.live(new)
    assert server.live(old)  # refreshed before it expired


def test_short_lived_tokens_are_renewed_before_they_expire(env, server, no_leaks):
    server.expires_in = 4
    block = authorised(server)
    auth = BearerAuth(TokenManager(block))  # the 60 s skew exceeds the tokens' life: renewed at half of it
    statuses, end = [], time.monotonic() + 5
    with requests.Session() as session:
        while time.monotonic() < end:
            statuses.append(session.get(f"{server.url}/api/me", auth=auth, timeout=10).status_code)
            time.sleep(0.2)
    assert set(statuses) == {200}  # no call ever carried an expired token
    assert 2 <= server.grants["refresh_token"] <= len(statuses) // 2  # renewed in time, yet not on every call
    assert server.errors == []


def test_the_rotated_refresh_token_is_saved_before_the_lock_is_released(env, server, no_leaks):
    block = authorised(server, expires_in=-1)
    old = secret(block.refresh_token)
    seen_inside_lock = []

    @contextlib.contextmanager
    def watched_lock(name, **kwargs):
        with named_lock(name, **kwargs):
            yield
            seen_inside_lock.append(secret(stored(block).refresh_token))

    token = TokenManager(block, lock=watched_lock).access_token()
    fam = server.family_of(token)
    assert fam.refresh != old and old in fam.spent
    assert seen_inside_lock == [fam.refresh]
    again = stored(block)
    assert secret(again.access_token) == token and secret(again.refresh_token) == fam.refresh
    assert abs((again.expires_at - datetime.now(timezone.utc)).total_seconds() - server.expires_in) < 5


def test_a_401_triggers_one_refresh_and_one_repeat(env, server, no_leaks):
    block = authorised(server)
    auth = BearerAuth(TokenManager(block))
    me = f"{server.url}/api/me"
    with requests.Session() as session:
        assert session.get(me, auth=auth, timeout=10).status_code == 200
        server.invalidate_access_tokens()  # the server stops taking the token before its expiry
        assert call(session, me, auth).status_code == 200
    assert server.grants == {"refresh_token": 1} and len(server.calls("GET", "/api/me")) == 3
    assert secret(stored(block).refresh_token) == server.family_of(secret(block.access_token)).refresh


def test_threads_refused_at_once_refresh_once(env, server, no_leaks):
    block = authorised(server)
    auth = BearerAuth(TokenManager(block))
    me = f"{server.url}/api/me"
    with requests.Session() as warm:
        assert warm.get(me, auth=auth, timeout=10).status_code == 200
    server.invalidate_access_tokens()
    start, statuses = threading.Barrier(6), []

    def worker() -> None:
        with requests.Session() as session:
            start.wait()
            statuses.append(call(session, me, auth).status_code)

    threads = [in_thread(worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 6 and server.grants == {"refresh_token": 1} and server.errors == []


def test_managers_of_one_block_in_many_threads_refresh_once(env, server, no_leaks):
    """Several connectors of one connection, each with its own copy of the block: the named lock and the
    reload inside it make one refresh of them all."""
    server.token_delay = 0.5
    block = authorised(server, expires_in=-1)
    managers = [TokenManager(stored(block)) for _ in range(5)]
    start, tokens = threading.Barrier(len(managers)), []

    def worker(manager: TokenManager) -> None:
        start.wait()
        tokens.append(manager.access_token())

    threads = [in_thread(worker, m) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert server.grants == {"refresh_token": 1} and server.errors == []
    assert len(set(tokens)) == 1 and len(tokens) == 5 and server.live(tokens[0])


@pytest.mark.parametrize("revoke_family", [True, False], ids=["family-revoked", "family-kept"])
def test_a_reused_refresh_token_names_the_block_and_says_to_connect_again(env, server, no_leaks, revoke_family):
    server.revoke_family_on_reuse = revoke_family
    block = authorised(server, expires_in=-1)
    # someone refreshed with the block's refresh token and never saved the answer: the block's is spent
    rotated = requests.post(f"{server.url}/token", data={"grant_type": "refresh_token", "refresh_token": secret(block.refresh_token)},
                            auth=(server.client_id, server.client_secret), timeout=10).json()
    with pytest.raises(CredentialsRefusedError) as info:
        TokenManager(block).access_token()
    message = str(info.value)
    no_leaks.append("".join(traceback.format_exception(info.value)))
    assert block.reference() in message and f"run `docroute connect {block.reference()}` again" in message
    assert "invalid_grant" in message
    assert server.live(rotated["access_token"]) is not revoke_family  # Exact-style: the reuse cost the authorisation


@pytest.mark.parametrize(
    "fault, retry_after",
    [
        (Fault(status=500, body=b"upstream down", match="POST /token"), None),
        (Fault(status=429, headers={"Retry-After": "7", "Content-Type": "application/json"},
               body=b'{"error": "slow_down"}', match="POST /token"), 7.0),
        (Fault(kind="cut", match="POST /token"), None),
        (Fault(kind="status", status=200, delay=2.0, match="POST /token"), None),  # slower than the block's timeout
    ],
    ids=["500", "429", "cut", "slow"],
)
def test_token_endpoint_failures_are_transient_and_keep_the_refresh_token(env, server, no_leaks, fault, retry_after):
    block = authorised(server, expires_in=-1, timeout=0.5)
    old = secret(block.refresh_token)
    server.fault(fault)
    manager = TokenManager(block)
    with pytest.raises(TransientError) as info:
        manager.access_token()
    no_leaks.append("".join(traceback.format_exception(info.value)))
    assert block.reference() in str(info.value) and info.value.retry_after == retry_after
    assert secret(stored(block).refresh_token) == old  # the route never ran: the old token is still the live one
    time.sleep(fault.delay)  # let a slow answer finish before the next request
    assert server.live(manager.access_token()) and server.errors == []


# -- two processes ----------------------------------------------------------------------------------

CHILD = r"""
import hashlib, json, sys, time
from pathlib import Path

import requests

from tasks.oauth import BearerAuth, TokenManager
from tests.fakes.oauth_server import FakeOAuthConnection

name, api, ready, go = sys.argv[1:5]
manager = TokenManager(FakeOAuthConnection.load(name))
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
token = manager.access_token()
status = requests.get(api, auth=BearerAuth(manager), timeout=10).status_code
print(json.dumps({"status": status, "token": hashlib.sha256(token.encode()).hexdigest()}))
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_processes_needing_a_refresh_at_once_refresh_once(env, server, no_leaks, tmp_path, backend):
    server.token_delay = 1.0  # a slow token endpoint: without the lock both requests would be in flight together
    block = authorised(server, expires_in=-1)
    old = secret(block.refresh_token)
    ledger = env if backend == "sqlite" else PG_URL
    child_env = {**os.environ, "DOCROUTE_LEDGER_URL": ledger, "PYTHONPATH": str(REPO)}
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, block._block_document_name, f"{server.url}/api/me",
                          str(tmp_path / f"ready{i}"), str(go)],
                         cwd=REPO, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "children did not start"
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    no_leaks += [o for pair in outputs for o in pair]
    assert [p.returncode for p in procs] == [0, 0], outputs
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [r["status"] for r in results] == [200, 200]
    assert server.grants == {"refresh_token": 1} and server.errors == []  # one refresh, never an invalid_grant
    assert results[0]["token"] == results[1]["token"]  # the second process adopted the first one's token
    fam = server.family_of(old)
    saved = stored(block)
    assert secret(saved.refresh_token) == fam.refresh and old in fam.spent
    assert hashlib.sha256(secret(saved.access_token).encode()).hexdigest() == results[0]["token"]


# -- where the token goes ---------------------------------------------------------------------------

def test_bearer_auth_never_sends_the_token_to_another_host(env, server, no_leaks):
    block = authorised(server)
    other = FakeAPI(name="other host")
    other.route("GET", "/api/me")(lambda req: Response.json({"authorization": req.headers.get("authorization")}))
    with other:
        server.route("GET", "/api/moved")(lambda req: Response(302, {"Location": f"{other.url}/api/me"}))
        auth = BearerAuth(TokenManager(block))
        assert auth.allowed_hosts == [host_entry(server.url)]
        for url in (f"{other.url}/api/me", f"http://localhost:{server.port}/api/me"):  # another port; another host name
            with pytest.raises(PermanentError, match="refused to send its access token") as info:
                requests.get(url, auth=auth, timeout=5)
            no_leaks.append(str(info.value))
        assert other.requests == [] and server.calls("GET", "/api/me") == []  # nothing was sent
        # a redirect to another host arrives there without the token (requests drops it; auth is not re-applied)
        moved = requests.get(f"{server.url}/api/moved", auth=auth, timeout=5)
        assert moved.json() == {"authorization": None} and len(other.requests) == 1
        assert requests.get(f"{server.url}/api/me", auth=auth, timeout=5).status_code == 200
        # a caller may narrow the allow-list, never widen it
        with pytest.raises(PermanentError):
            BearerAuth(TokenManager(block), allowed_hosts=[host_entry(other.url)])


def test_bearer_auth_sends_the_token_over_https_only_outside_loopback(env, server, no_leaks):
    block = authorised(server)
    block.api_hosts = [host_entry(server.url), "erp.example.com"]
    auth = BearerAuth(TokenManager(block))
    assert auth.allows("https://erp.example.com/api/me") and auth.allows(f"{server.url}/api/me")  # loopback http: a test server
    with pytest.raises(PermanentError, match=r"refused to send its access token to http://erp.example.com: not over https") as info:
        requests.get("http://erp.example.com/api/me", auth=auth, timeout=5)  # refused before any connection is made
    no_leaks.append(str(info.value))


def test_api_hosts_of_the_block_replace_the_default(env, server, no_leaks):
    api = FakeAPI(name="api host")
    api.route("GET", "/v1/me")(lambda req: Response.json({"authorization": bool(req.headers.get("authorization"))}))
    with api:
        block = authorised(server, api_hosts=[host_entry(api.url)])
        auth = BearerAuth(TokenManager(block))
        assert requests.get(f"{api.url}/v1/me", auth=auth, timeout=5).json() == {"authorization": True}
        with pytest.raises(PermanentError):
            requests.get(f"{server.url}/api/me", auth=auth, timeout=5)


# -- revocation, the block -------------------------------------------------------------------------

def test_revoke_ends_the_authorisation_and_clears_the_block(env, server, no_leaks):
    block = authorised(server)
    access = secret(block.access_token)
    oauth.revoke(block)
    assert server.grants["revoke"] == 2 and not server.live(access)  # refresh token first, then the access token
    assert server.family_of(access).revoked
    saved = stored(block)
    assert saved.access_token is None and saved.refresh_token is None and saved.expires_at is None


def test_the_block_keeps_its_secrets_secret(env, server, no_leaks):
    block = authorised(server)
    schema = FakeOAuthConnection.model_json_schema()
    assert {"client_secret", "username", "password", "access_token", "refresh_token"} <= set(schema["secret_fields"])
    no_leaks += [block.label(), repr(stored(block)), block.reference()]
    with pytest.raises(ValueError) as info:
        FakeOAuthConnection(client_id="c", client_secret=server.client_secret, token_url="ftp://nowhere")
    no_leaks.append(str(info.value))
    with pytest.raises(ValueError):
        FakeOAuthConnection(client_id="c", token_url=f"{server.url}/token", grant="password", password=PASSWORD)
