"""tasks.http against real local servers (tests/fakes): classification, secrets, retries, credentials,
hosts, TLS and pacing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from urllib.parse import quote

import pytest
import requests

from tasks.errors import (
    BudgetExhaustedError,
    CredentialsRefusedError,
    PermanentError,
    TransientError,
)
from tasks.http import HttpClient, Pacer, parse_rate_limits, parse_retry_after
from tests.connectors.harness_webhook import server_tls_context
from tests.fakes.base import FakeAPI, Fault, Response, self_signed_cert
from tests.fakes.http_limits import LimitedAPI

SECRET = "s3cr3t/Tok3n+value"  # '/' and '+' so that its URL-quoted form differs


@pytest.fixture
def api():
    fake = FakeAPI(name="test API")

    @fake.route("GET", "/ok")
    def ok(req):
        return Response.json({"ok": True})

    @fake.route("POST", "/ok")
    def posted(req):
        return Response.json({"id": "r-1"}, 201)

    @fake.route("PUT", "/ok")
    def put(req):
        return Response(204)

    @fake.route("GET", "/html")
    def html(req):
        return Response(200, {"Content-Type": "text/html"}, b"<html>\n<body>maintenance</body></html>")

    with fake:
        yield fake


def client_for(api, **kw) -> HttpClient:
    settings = {"base_url": api.url, "secrets": [SECRET], "retries": 3, "backoff": 0.01, "max_backoff": 0.05, "timeout": 5}
    settings.update(kw)
    return HttpClient(label_of(api), **settings)


def label_of(api) -> str:
    return f"test-api {api.url}/"


def refused(api, status, body=b"", headers=None, times=1, match=None):
    api.fault(Fault(status=status, body=body, headers=headers or {}, times=times, match=match))


# -- classification and messages -----------------------------------------------------------------------
ECHO = f"refused; you sent Authorization: Bearer {SECRET}\n and the key {quote(SECRET, safe='')} " .encode() + b"x" * 1000


@pytest.mark.parametrize(
    "status, cls, words",
    [
        (400, PermanentError, ""), (404, PermanentError, ""), (409, PermanentError, ""), (422, PermanentError, ""),
        (410, PermanentError, ": gone"),
        (401, CredentialsRefusedError, "credentials refused"),
        (408, TransientError, ""), (425, TransientError, ""), (429, TransientError, ""),
        (500, TransientError, ""), (502, TransientError, ""), (503, TransientError, ""), (504, TransientError, ""),
    ],
)
def test_each_status_class_and_its_message(api, status, cls, words):
    refused(api, status, ECHO)
    with client_for(api) as client, pytest.raises(cls) as info:
        client.post("/ok?api_key=" + quote(SECRET, safe=""), what="document INV-1", json={})
    exc = info.value
    assert type(exc) is cls and exc.status == status
    text = str(exc)
    assert text.startswith(f"document INV-1: {label_of(api)} answered {status} ")
    assert words in text and "refused; you sent Authorization: Bearer ***" in text
    assert SECRET not in text and quote(SECRET, safe="") not in text and "api_key" not in text
    answer = text[text.index("refused; you sent"):]
    assert "\n" not in text and answer.endswith("x...") and len(answer) == 300 + len("...")
    assert len(api.calls()) == 1  # a POST is not retried


def test_a_status_the_caller_names_is_a_credentials_error(api):
    refused(api, 403, b"invalid api key", times=2)
    with pytest.raises(CredentialsRefusedError, match="answered 403 Forbidden: credentials refused: invalid api key"):
        client_for(api, credential_statuses={403}).post("/ok", what="listing")
    with pytest.raises(PermanentError) as info:
        client_for(api).post("/ok", what="listing")
    assert type(info.value) is PermanentError


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_permanent_and_never_followed(api, status):
    secret_path = quote(SECRET, safe="")
    refused(api, status, headers={"Location": f"/moved/{secret_path}?token={secret_path}"})
    with pytest.raises(PermanentError) as info:
        client_for(api).get("/ok", what="document INV-2")
    text = str(info.value)
    assert type(info.value) is PermanentError and info.value.status == status
    assert f"answered {status}" in text and f"redirect to {api.url}/moved/***" in text and "not followed" in text
    assert "final address" in text and SECRET not in text and secret_path not in text and "token" not in text
    assert [r.path for r in api.calls()] == ["/ok"]  # neither followed nor retried


def test_a_token_an_auth_put_in_the_request_is_scrubbed_too(api):
    class Bearer(requests.auth.AuthBase):
        def __call__(self, r):
            r.headers["Authorization"] = "Bearer dyn-token-42"
            return r

    refused(api, 400, b"you sent dyn-token-42")
    with pytest.raises(PermanentError) as info:
        client_for(api, auth=Bearer()).post("/ok")
    assert "you sent ***" in str(info.value) and "dyn-token-42" not in str(info.value)


# -- Retry-After -----------------------------------------------------------------------------------------
def test_retry_after_in_seconds_and_as_an_http_date(api):
    refused(api, 429, headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as info:
        client_for(api).post("/ok", what="document INV-3")
    assert info.value.retry_after == 7 and "(Retry-After 7 s)" in str(info.value)

    refused(api, 503, headers={"Retry-After": formatdate(time.time() + 120, usegmt=True)})
    with pytest.raises(TransientError) as info:
        client_for(api).post("/ok")
    assert 100 < info.value.retry_after <= 121

    assert parse_retry_after("12") == 12 and parse_retry_after(" 0 ") == 0
    assert parse_retry_after(formatdate(1_000_060, usegmt=True), now=1_000_000) == 60
    assert parse_retry_after(formatdate(1_000_000, usegmt=True), now=1_000_060) == 0  # already past
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after(None) is None


def test_a_429_without_retry_after_takes_the_rate_limit_reset():
    reset_ms = int((time.time() + 30) * 1000)
    with FakeAPI() as api:
        refused(api, 429, headers={"X-RateLimit-Minutely-Remaining": "0", "X-RateLimit-Minutely-Reset": str(reset_ms)})
        with pytest.raises(TransientError) as info:
            client_for(api).post("/ok")
    assert 28 < info.value.retry_after <= 30 and "rate limit resets in" in str(info.value)


# -- retries -----------------------------------------------------------------------------------------------
def test_a_get_is_retried_through_a_429_storm(api):
    refused(api, 429, headers={"Retry-After": "0"}, times=3)
    assert client_for(api, retries=3).get("/ok").json() == {"ok": True}
    assert len(api.calls("GET", "/ok")) == 4

    refused(api, 503, times=2)  # no Retry-After: exponential backoff
    assert client_for(api, retries=3).get("/ok").status_code == 200
    assert len(api.calls("GET", "/ok")) == 7

    refused(api, 429, headers={"Retry-After": "0"}, times=10)  # longer than the retries
    with pytest.raises(TransientError, match="answered 429"):
        client_for(api, retries=2).get("/ok", what="listing")
    assert len(api.calls("GET", "/ok")) == 10


def test_retry_after_is_waited_for_before_the_retry(api):
    refused(api, 429, headers={"Retry-After": "1"})
    assert client_for(api).get("/ok").status_code == 200
    first, second = api.calls()
    assert second.at - first.at >= 0.95


def test_a_post_is_retried_only_when_marked_idempotent(api):
    refused(api, 503, times=1)
    with pytest.raises(TransientError):
        client_for(api).post("/ok", what="document INV-4", json={"a": 1})
    assert len(api.calls()) == 1

    refused(api, 503, times=1)
    assert client_for(api).post("/ok", json={"a": 1}, idempotent=True).status_code == 201
    assert [r.json() for r in api.calls()[1:]] == [{"a": 1}, {"a": 1}]


def test_a_streamed_body_is_rewound_for_a_repeat(api, tmp_path):
    body = tmp_path / "body.bin"
    body.write_bytes(b"0123456789" * 1000)
    refused(api, 502, times=1)
    with body.open("rb") as f:
        assert client_for(api).request("PUT", "/ok", data=f, idempotent=True).status_code == 204
    assert [r.body for r in api.calls()] == [body.read_bytes()] * 2


def test_a_cut_connection_is_transient(api):
    api.fault(Fault(kind="cut", times=10))
    with pytest.raises(TransientError) as info:
        client_for(api).post("/ok", what="document INV-5")
    assert type(info.value) is TransientError and "document INV-5: cannot reach" in str(info.value)
    assert len(api.calls()) == 1
    with pytest.raises(TransientError):
        client_for(api, retries=2).get("/ok")
    assert len(api.calls()) == 4


def test_a_slow_answer_is_a_transient_timeout(api):
    api.fault(Fault(status=200, delay=1.0))
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"document INV-6: test-api .* did not answer within 0.3 s"):
        client_for(api, timeout=0.3).post("/ok", what="document INV-6")
    assert time.monotonic() - started < 0.9


# -- credentials -------------------------------------------------------------------------------------------
class RefreshingAuth(requests.auth.AuthBase):
    """A bearer token that refresh() replaces (as the OAuth2 module's will)."""

    def __init__(self):
        self.refreshes = 0

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer token-number-{self.refreshes}"
        return r

    def refresh(self):
        self.refreshes += 1


def test_a_401_refreshes_once_then_repeats_the_request(api):
    @api.route("GET", "/private")
    def private(req):
        if req.headers.get("authorization") != "Bearer token-number-1":
            return Response.text(f"expired: {req.headers.get('authorization')}", 401)
        return Response.json({"private": True})

    auth = RefreshingAuth()
    assert client_for(api, auth=auth).get("/private").json() == {"private": True}
    assert auth.refreshes == 1 and len(api.calls("GET", "/private")) == 2


def test_a_second_401_is_a_credentials_error(api):
    refused(api, 401, b"no", times=5, match="POST /ok")
    auth = RefreshingAuth()
    with pytest.raises(CredentialsRefusedError) as info:
        client_for(api, auth=auth).post("/ok", what="document INV-7")
    assert auth.refreshes == 1 and len(api.calls()) == 2  # one refresh, one repeat, even of a POST
    assert "document INV-7" in str(info.value) and "answered 401" in str(info.value) and info.value.status == 401

    with pytest.raises(CredentialsRefusedError):  # an auth that cannot refresh: the first 401 is final
        client_for(api, auth=("user", "password-1")).post("/ok")
    assert len(api.calls()) == 3


# -- hosts and URLs --------------------------------------------------------------------------------------
def test_a_host_the_connection_does_not_name_is_refused_before_sending(api):
    other = f"http://localhost:{api.port}/ok"
    with pytest.raises(PermanentError) as info:
        client_for(api).get(other, what="document INV-8")
    text = str(info.value)
    assert "document INV-8" in text and "host localhost refused" in text and label_of(api) in text
    assert api.calls() == []
    # the same server is reachable under that name once the connection names it
    assert client_for(api, hosts=["localhost"]).get(other).status_code == 200

    refused(api, 302, headers={"Location": f"http://localhost:{api.port}/ok"})
    with pytest.raises(PermanentError, match="not followed .host localhost is not one this connection names."):
        client_for(api).get("/ok")
    assert [r.path for r in api.calls()] == ["/ok", "/ok"]  # localhost's request above, then the 302: nothing followed


def test_bad_urls_and_ca_bundles_are_permanent(api, tmp_path):
    with pytest.raises(PermanentError, match="bad URL for test-api"):
        client_for(api).get("ftp://127.0.0.1/x")
    with pytest.raises(PermanentError, match="ca_bundle .*missing.pem.* cannot be used"):
        HttpClient("tls test", hosts=["127.0.0.1"], ca_bundle=str(tmp_path / "missing.pem")).get(f"https://127.0.0.1:{api.port}/")
    with pytest.raises(ValueError):
        HttpClient("nowhere")


# -- TLS ---------------------------------------------------------------------------------------------------
@pytest.fixture
def tls_api(tmp_path):
    cert, key = self_signed_cert(tmp_path)
    fake = FakeAPI(tls=server_tls_context(cert, key))
    fake.route("GET", "/ok")(lambda req: Response.json({"ok": True}))
    with fake:
        yield fake, cert


def test_tls_is_verified_by_default(tls_api):
    api, _ = tls_api
    client = client_for(api)
    with pytest.raises(PermanentError) as info:
        client.get("/ok", what="listing")
    assert str(info.value) == (
        f"listing: TLS certificate of {label_of(api)} not accepted: self-signed certificate. Fix the endpoint's "
        "certificate, or set ca_bundle on the connection to the CA that issued it"
    )
    with pytest.raises(PermanentError, match="self-signed"):
        client.check_tls()
    assert api.calls() == []


def test_a_ca_bundle_is_trusted_even_against_requests_ca_bundle(tls_api, monkeypatch, tmp_path):
    api, cert = tls_api
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "elsewhere.pem"))  # would win over a session-level verify
    client = client_for(api, ca_bundle=str(cert))
    client.check_tls()
    assert client.get("/ok").json() == {"ok": True}


# -- JSON ----------------------------------------------------------------------------------------------------
def test_json_names_the_endpoint_when_the_body_is_not_json(api):
    client = client_for(api)
    assert client.json(client.get("/ok")) == {"ok": True}
    with pytest.raises(PermanentError) as info:
        client.json(client.get("/html"), what="invoice list")
    text = str(info.value)
    assert text.startswith(f"invoice list: {label_of(api)} answered 200 with a body that is not JSON (text/html)")
    assert "maintenance" in text and "\n" not in text


# -- pacing --------------------------------------------------------------------------------------------------
def test_rate_limit_headers_are_read():
    now = 1_700_000_000.0
    budgets = parse_rate_limits({
        "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4000", "X-RateLimit-Reset": str(int((now + 3600) * 1000)),
        "X-RateLimit-Minutely-Limit": "60", "X-RateLimit-Minutely-Remaining": "59", "X-RateLimit-Minutely-Reset": str(int(now + 30)),
        "ratelimit-remaining": "7", "ratelimit-reset": "12",
    }, now)
    assert {b.name: (b.limit, b.remaining, round(b.reset_in)) for b in budgets} == {
        "X-RateLimit": (5000, 4000, 3600), "X-RateLimit-Minutely": (60, 59, 30), "RateLimit": (None, 7, 12)}
    assert parse_rate_limits({"RateLimit": "limit=10, remaining=3, reset=5"}) == [("RateLimit", 10, 3, 5)]
    assert parse_rate_limits({"RateLimit": '"default";r=50;t=30'}) == [("RateLimit", None, 50, 30)]
    assert parse_rate_limits({"Content-Type": "text/plain"}) == []


def _run_many(client, n=12, threads=3):
    time.sleep(1.0 - time.time() % 1.0 + 0.01)  # start with a whole 1 s window ahead (the fake's are epoch-aligned)
    with ThreadPoolExecutor(threads) as pool:  # one client, several threads: one pacer
        return list(pool.map(lambda i: client.get(f"/items/{i}").json()["n"], range(n)))


@pytest.mark.parametrize("style", ["exact", "ietf", "combined"])
def test_paced_by_the_rate_limit_headers_with_no_429(style):
    with LimitedAPI(limit=5, window=1.0, style=style) as api:
        client = HttpClient(f"limited {api.url}", base_url=api.url, retries=0)  # a 429 would raise
        assert sorted(_run_many(client)) == list(range(12))
        assert api.refused == 0 and sum(api.accepted.values()) == 12
        assert max(api.accepted.values()) <= 5 and len(api.accepted) >= 3
        # spread over each window, not a burst at its start then a wait
        times = sorted(r.at for r in api.calls())
        assert min(b - a for a, b in zip(times, times[4:], strict=False)) > 0.3  # a burst of 5 takes a few ms


def test_paced_by_a_static_limit_when_the_answers_say_nothing():
    with LimitedAPI(limit=5, window=1.0, style="none") as api:
        client = HttpClient(f"limited {api.url}", base_url=api.url, retries=0, pacer=Pacer(5, 1.0))
        assert sorted(_run_many(client)) == list(range(12))
        assert api.refused == 0 and max(api.accepted.values()) <= 5 and len(api.accepted) >= 3

        unpaced = HttpClient(f"limited {api.url}", base_url=api.url, retries=0)  # the fake does refuse a burst
        with pytest.raises(TransientError, match="answered 429"):
            _run_many(unpaced)


def test_a_429_retry_after_holds_every_thread(api):
    refused(api, 429, headers={"Retry-After": "1"}, match="POST")
    client = client_for(api)
    with pytest.raises(TransientError):
        client.post("/ok")
    with ThreadPoolExecutor(2) as pool:
        assert [f.result().status_code for f in [pool.submit(client.get, "/ok") for _ in range(2)]] == [200, 200]
    first, *others = api.calls()
    assert len(others) == 2 and all(r.at - first.at >= 0.95 for r in others)


def test_a_daily_budget_used_up_stops_with_when_it_resumes():
    reset = int(time.time()) + 3 * 3600
    with FakeAPI() as api:
        api.route("GET", "/ok")(lambda req: Response.json({}, headers={
            "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset * 1000),
            "X-RateLimit-Minutely-Limit": "60", "X-RateLimit-Minutely-Remaining": "59",
            "X-RateLimit-Minutely-Reset": str(int(time.time() + 60) * 1000)}))
        client = client_for(api)
        client.get("/ok")
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(BudgetExhaustedError) as info:
                client.get("/ok", what="listing")
        assert time.monotonic() - started < 0.5  # no waiting for hours
        assert len(api.calls()) == 1
        label = label_of(api)
    exc = info.value
    assert exc.resumes_at.tzinfo is not None and abs(exc.resumes_at.timestamp() - reset) <= 1
    assert str(exc) == f"listing: {label}: daily limit reached, resumes at {exc.resumes_at:%Y-%m-%d %H:%M:%S} UTC"


def test_a_retry_after_beyond_max_wait_is_a_budget_exhausted(api):
    refused(api, 429, headers={"Retry-After": "7200"})
    with pytest.raises(BudgetExhaustedError) as info:
        client_for(api).get("/ok")  # the retry would have to wait two hours
    assert abs(info.value.resumes_at.timestamp() - (time.time() + 7200)) < 5
    assert "Retry-After" in str(info.value) and "resumes at" in str(info.value)
    assert len(api.calls()) == 1
