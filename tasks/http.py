"""The HTTP layer every REST connector and source builds on: one `HttpClient` per connection.

What a caller gets, whichever remote it talks to:

- Transport: a requests.Session, TLS verified (optionally against a CA bundle; `verify` is passed on
  every request too, since a session-level one loses to REQUESTS_CA_BUNDLE, requests #3829),
  connect/read timeouts, default headers, a User-Agent and an optional `requests.auth.AuthBase`.
  The client is thread-safe: several threads may send through it at once.
- Hosts: only the hosts the connection names (`base_url`, `hosts`) are ever contacted; a request
  to any other is refused with a PermanentError before a byte is sent. Redirects are never
  followed: a 3xx is a PermanentError saying to configure the final URL.
- Classification, here and nowhere else (tasks.errors): 2xx ok; 401 and the caller's
  `credential_statuses` -> CredentialsRefusedError; 408, 425, 429, 5xx -> TransientError with
  `retry_after` from Retry-After; 410 ("gone"), other 3xx and 4xx -> PermanentError. Network errors
  and timeouts -> TransientError; a certificate that does not verify, a bad URL or CA bundle ->
  PermanentError. Messages read "<what>: <label> answered <status> <reason>[: <note>]: <answer>"
  (the answer on one line, at most 300 characters), are scrubbed of the connection's secrets
  (tasks.secrets.scrub), and errors carry `.status`.
- Credentials: when the auth object has a `refresh()` method, a 401 triggers exactly one refresh
  and one repeat of the request; a second 401 is a CredentialsRefusedError.
- Retries: only for retryable requests (GET, HEAD and OPTIONS by default; any other method when the
  caller passes idempotent=True), on TransientError, at most `retries` times (tenacity): after
  Retry-After (the pacer holds every thread until then), else after an exponential backoff with
  jitter, capped at `max_backoff`. Other requests raise their first error: the sync engine retries
  per document. A streamed body is rewound before a repeat when it can seek.
- Pacing (`Pacer`, shared by every thread of one client), so a run stays under a rate limit instead
  of collecting 429s: a static limit the caller gives (`calls` per `per` seconds, a sliding window),
  and what answers say (`parse_rate_limits`: X-RateLimit-*, Exact Online's X-RateLimit-Minutely-*,
  IETF RateLimit-* and the combined RateLimit header). The calls a short window (resetting within
  `max_wait`) has left are spread until its reset; no call goes while a budget is at 0 before its
  reset; a Retry-After holds every thread. A wait longer than `max_wait` (a daily budget used up)
  raises BudgetExhaustedError with `resumes_at`: "<label>: daily limit reached, resumes at <time>".
- Helpers: `json(response, what)` reads a JSON answer (a PermanentError naming the endpoint when it is
  not JSON); `check_tls()` at a connector's open() stops a run on a certificate problem before any
  document is touched; `request(..., check=False)` returns non-2xx answers for a caller to read.

    client = HttpClient("exact https://start.exactonline.nl/api/v1", base_url="https://start.exactonline.nl/api/v1",
                        auth=oauth, secrets=block.secret_values(), pacer=Pacer(60, 60))
    me = client.json(client.get("/current/Me", what="connection check"), what="connection check")
"""

from __future__ import annotations

import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, Self
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from requests.exceptions import (
    ChunkedEncodingError,
    InvalidSchema,
    InvalidURL,
    MissingSchema,
)
from requests.structures import CaseInsensitiveDict
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from blocks.base import url_label
from tasks.errors import (
    BudgetExhaustedError,
    CredentialsRefusedError,
    PermanentError,
    RemoteError,
    TransientError,
)
from tasks.secrets import scrub

__all__ = ["Budget", "HttpClient", "Pacer", "parse_rate_limits", "parse_retry_after", "reset_seconds", "url_label"]

USER_AGENT = "docroute/1"
ANSWER_CHARS = 300
TRANSIENT_STATUSES = frozenset({408, 425, 429})
RETRYABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DAILY = "daily limit reached"


# -- header parsing ------------------------------------------------------------------------------------
def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def reset_seconds(value: float, now: float | None = None) -> float:
    """Seconds until a rate-limit reset: above 1e12 epoch milliseconds (Exact Online), above 1e9 epoch
    seconds, otherwise already seconds from now."""
    now = time.time() if now is None else now
    if value > 1e12:
        return value / 1000 - now
    if value > 1e9:
        return value - now
    return value


class Budget(NamedTuple):
    """One call budget an answer reported; `reset_in` seconds from now (None: not said)."""

    name: str
    limit: int | None
    remaining: int
    reset_in: float | None


# (budget name, header prefix); the minutely one first, as "X-RateLimit-" is also its prefix's start
_FAMILIES = (("X-RateLimit-Minutely", "X-RateLimit-Minutely-"), ("X-RateLimit", "X-RateLimit-"), ("RateLimit", "RateLimit-"))
_NUMBER = re.compile(r"\s*(-?\d+(?:\.\d+)?)")


def _number(value: str | None) -> float | None:
    match = _NUMBER.match(value or "")
    return float(match.group(1)) if match else None


def parse_rate_limits(headers: Mapping[str, str], now: float | None = None) -> list[Budget]:
    """The budgets an answer's headers report: X-RateLimit-*, X-RateLimit-Minutely-*, RateLimit-*
    (IETF), or the combined `RateLimit: limit=.., remaining=.., reset=..` (also `r=..;t=..`)."""
    headers = headers if isinstance(headers, CaseInsensitiveDict) else CaseInsensitiveDict(headers)
    found: list[Budget] = []

    def add(name: str, limit: float | None, remaining: float | None, reset: float | None) -> None:
        if remaining is not None:
            reset_in = reset_seconds(reset, now) if reset is not None else None
            found.append(Budget(name, None if limit is None else int(limit), int(remaining), reset_in))

    for name, prefix in _FAMILIES:
        add(name, *(_number(headers.get(prefix + part)) for part in ("Limit", "Remaining", "Reset")))
    combined = headers.get("RateLimit")
    if combined and not any(b.name == "RateLimit" for b in found):
        fields = {k.lower(): float(v) for k, v in re.findall(r"([A-Za-z]+)\s*=\s*\"?(-?\d+(?:\.\d+)?)", combined)}
        add("RateLimit", fields.get("limit", fields.get("q")), fields.get("remaining", fields.get("r")),
            fields.get("reset", fields.get("t")))
    return found


def _host(name_or_url: str) -> str:
    host = urlsplit(name_or_url).hostname if "://" in name_or_url else name_or_url
    return (host or "").lower().rstrip(".")


def _who(what: str) -> str:
    return f"{what}: " if what else ""


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception (urllib3 wraps ssl/socket errors several levels deep)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            inner = next((a for a in getattr(exc, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None:
            reason = getattr(exc, "reason", None)
            inner = reason if isinstance(reason, BaseException) else None
        if inner is None:
            break
        exc = inner
    return exc


# -- pacing --------------------------------------------------------------------------------------------
@dataclass
class _Window:
    """What the answers say of one budget: calls left until `reset_at` (monotonic; None: unknown)."""

    remaining: int
    reset_at: float | None


class Pacer:
    """Holds one client's requests (all its threads) so they stay under the remote's rate limits.

    `calls` per `per` seconds is a static, caller-side limit (a sliding window over the times the
    calls completed); the answers' rate-limit headers add the remote's budgets (`parse_rate_limits`).
    `acquire` before each request, `done` after it. A wait longer than `max_wait` raises
    BudgetExhaustedError. `clock` (monotonic), `wall` (epoch) and `sleep` can be injected."""

    POLL = 0.02  # while a budget is at 0 and the answer that updates it is still in flight
    SLACK = 0.02  # after a reported reset, before the first call of the new window

    def __init__(self, calls: int | None = None, per: float | None = None, *, max_wait: float = 120.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        if (calls is None) != (per is None) or (calls is not None and (calls < 1 or per <= 0)):
            raise ValueError("a static limit needs both calls >= 1 and per > 0")
        self.calls, self.per, self.max_wait = calls, per, max_wait
        self.clock, self.wall, self.sleep = clock, wall, sleep
        self._lock = threading.Lock()
        self._sent: list[list[float]] = []  # static window: when each call completed (inf while in flight)
        self._windows: dict[str, _Window] = {}
        self._pause_until, self._pause_reason = -math.inf, ""
        self._last_send = -math.inf
        self._inflight = 0

    def acquire(self, label: str = "", what: str = "") -> list[float]:
        """Wait until a request may go; returns the ticket to hand to `done`."""
        while True:
            with self._lock:
                now = self.clock()
                at, reason = self._earliest(now)
                if at <= now:
                    ticket = [math.inf]
                    if self.calls:
                        self._sent.append(ticket)
                    for window in self._windows.values():
                        window.remaining -= 1
                    self._last_send = now
                    self._inflight += 1
                    return ticket
                if reason and at - now > self.max_wait:
                    resumes_at = datetime.fromtimestamp(math.ceil(self.wall() + at - now), UTC)
                    exc = BudgetExhaustedError(
                        f"{_who(what)}{label}: {reason}, resumes at {resumes_at:%Y-%m-%d %H:%M:%S} UTC", resumes_at=resumes_at
                    )
                    exc.retry_after = at - now
                    raise exc
            self.sleep(at - now)

    def done(self, ticket: list[float], headers: Mapping[str, str] | None = None, retry_after: float | None = None) -> None:
        """A request ended: learn the budgets its answer reported, and hold every thread for its Retry-After."""
        with self._lock:
            now = self.clock()
            ticket[0] = now
            self._inflight -= 1
            if retry_after:
                self._pause(now, retry_after)
            for budget in parse_rate_limits(headers, self.wall()) if headers is not None else ():
                reset_at = None if budget.reset_in is None else now + budget.reset_in
                if reset_at is not None and reset_at <= now:
                    continue  # about a window that is over
                remaining = budget.remaining - self._inflight  # calls still in flight may not be counted in it
                window = self._windows.get(budget.name)
                if window is not None and window.reset_at is not None and window.reset_at > now:
                    window.remaining = min(window.remaining, remaining)  # answers can arrive out of order
                else:
                    self._windows[budget.name] = _Window(remaining, reset_at)

    def pause(self, seconds: float) -> None:
        """Hold every thread for `seconds` (a Retry-After)."""
        with self._lock:
            self._pause(self.clock(), seconds)

    def _pause(self, now: float, seconds: float) -> None:
        if now + seconds > self._pause_until:
            self._pause_until, self._pause_reason = now + seconds, f"asked to wait {seconds:g} s (Retry-After)"

    def _earliest(self, now: float) -> tuple[float, str]:
        """When the next call may go, and why ("" when only waiting for an answer in flight)."""
        waits = [(self._pause_until, self._pause_reason)]
        if self.calls:
            self._sent = [t for t in self._sent if t[0] > now - self.per]
            if len(self._sent) >= self.calls:
                oldest = sorted(t[0] for t in self._sent)[len(self._sent) - self.calls]
                waits.append((oldest + self.per, DAILY) if oldest < math.inf else (now + self.POLL, ""))
        for window in self._windows.values():
            if window.reset_at is not None and window.reset_at + self.SLACK <= now:
                # A new window: one call to learn its budget (calls that went before may count in it).
                window.remaining, window.reset_at = 1, None
            if window.remaining <= 0:
                if window.reset_at is not None:
                    waits.append((window.reset_at + self.SLACK, DAILY))
                elif self._inflight:
                    waits.append((now + self.POLL, ""))
            elif window.reset_at is not None and window.reset_at - now <= self.max_wait and self._last_send > -math.inf:
                # Spread what is left: `remaining` calls in the time to the reset, the last one before it.
                waits.append((self._last_send + (window.reset_at - self._last_send) / (window.remaining + 1), ""))
        return max(waits)


# -- the client ----------------------------------------------------------------------------------------
def _retry_on(exc: BaseException) -> bool:
    return isinstance(exc, TransientError) and not isinstance(exc, BudgetExhaustedError)


class HttpClient:
    """One connection's HTTP client (thread-safe); see the module docstring for the contract.

    `label` names the endpoint in every message (never a secret or query string); `what` (per
    request) names the object, e.g. "document INV-1". `notes` replace the phrase after
    "answered <status>" for a status (e.g. {410: "endpoint gone"}). `credential_statuses` are
    answered like a 401 (GetMyInvoices answers 403 to a bad key)."""

    def __init__(
        self,
        label: str,
        *,
        base_url: str | None = None,
        hosts: Iterable[str] = (),
        verify: bool = True,
        ca_bundle: str | None = None,
        timeout: float | tuple[float, float] = 30.0,
        headers: Mapping[str, str] | None = None,
        user_agent: str = USER_AGENT,
        auth: AuthBase | tuple[str, str] | None = None,
        secrets: Iterable[str] = (),
        credential_statuses: Iterable[int] = (),
        notes: Mapping[int, str] | None = None,
        pacer: Pacer | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        pool_size: int = 10,
    ):
        self.label = label
        self.base_url = base_url
        self.hosts = frozenset(h for h in (_host(x) for x in [base_url or "", *hosts]) if h)
        if not self.hosts:
            raise ValueError(f"{label}: name the hosts this connection may reach (base_url or hosts)")
        self.verify: bool | str = ca_bundle if (verify and ca_bundle) else bool(verify)
        self.ca_bundle = ca_bundle if verify else None
        self.timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        self.auth = auth
        self.secrets = list(secrets)
        self.credential_statuses = frozenset(credential_statuses) | {401}
        self.notes = dict(notes or {})
        self.pacer = pacer or Pacer()
        self.retries, self.max_backoff = retries, max_backoff
        self._jitter = wait_exponential_jitter(initial=backoff, max=max_backoff, jitter=backoff)
        self._refresh_lock = threading.Lock()
        session = requests.Session()
        session.verify = self.verify
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update({"User-Agent": user_agent, **(headers or {})})
        session.auth = auth
        self.session = session

    # -- requests ------------------------------------------------------------------------------------
    def request(self, method: str, url: str, *, what: str = "", idempotent: bool | None = None, check: bool = True,
                **kwargs: Any) -> requests.Response:
        """Send `method url` (relative to base_url unless absolute); keyword arguments go to requests.

        Raises the classified error of a non-2xx answer, unless `check` is False: then any answer is
        returned (network, TLS and host errors still raise). Retried when GET/HEAD/OPTIONS or
        `idempotent`."""
        method = method.upper()
        retryable = method in RETRYABLE_METHODS if idempotent is None else idempotent
        body = kwargs.get("data")
        start = body.tell() if callable(getattr(body, "seek", None)) and callable(getattr(body, "tell", None)) else None
        call = (method, self._url(url), what, check, kwargs, start)
        if not retryable or self.retries <= 0:
            return self._attempt(*call)
        retrying = Retrying(stop=stop_after_attempt(self.retries + 1), wait=self._wait, retry=retry_if_exception(_retry_on),
                            sleep=self.pacer.sleep, reraise=True)
        return retrying(self._attempt, *call)

    def get(self, url: str, *, what: str = "", **kwargs: Any) -> requests.Response:
        """A GET (retried on transient errors)."""
        return self.request("GET", url, what=what, **kwargs)

    def post(self, url: str, *, what: str = "", idempotent: bool = False, **kwargs: Any) -> requests.Response:
        """A POST: retried only when `idempotent`."""
        return self.request("POST", url, what=what, idempotent=idempotent, **kwargs)

    def json(self, response: requests.Response, what: str = "") -> Any:
        """The JSON of an answer; a PermanentError naming `what` and the endpoint when it is not JSON."""
        try:
            return response.json()
        except ValueError:
            status, text = response.status_code, self.answer(response)
            ctype = response.headers.get("Content-Type") or "no Content-Type"
            message = f"{_who(what)}{self.label} answered {status} with a body that is not JSON ({ctype})"
            raise self._error(PermanentError, message + (f": {text}" if text else ""), response, status=status) from None

    def check_tls(self, url: str | None = None) -> None:
        """A HEAD to `url` (default: base_url) over https, raising only what is the connection's to fix: the
        certificate, the CA bundle, the URL. Any answer (even a 405) and network errors are let through."""
        url = self._url(url or self.base_url or "")
        if not (self.verify and url.lower().startswith("https:")):
            return
        try:
            self.request("HEAD", url, idempotent=False, check=False).close()
        except TransientError:
            pass

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answers -------------------------------------------------------------------------------------
    def answer(self, response: requests.Response) -> str:
        """The first 300 characters of an answer, on one line, without secrets."""
        try:
            text = response.content[:4096].decode(response.encoding or "utf-8", "replace")
        except (requests.RequestException, LookupError):
            text = ""
        text = scrub(re.sub(r"\s+", " ", text).strip(), self._secrets(response))
        return text[:ANSWER_CHARS] + ("..." if len(text) > ANSWER_CHARS else "")

    def status_error(self, response: requests.Response, what: str = "") -> RemoteError | None:
        """The error an answer means (None for a 2xx), classified as the module docstring says."""
        status = response.status_code
        if 200 <= status < 300:
            return None
        where = f"{_who(what)}{self.label} answered {status} {response.reason or ''}".rstrip()
        text = self.answer(response)
        tail = f": {text}" if text else ""
        defaults = {410: "gone", **dict.fromkeys(self.credential_statuses, "credentials refused")}
        note = self.notes.get(status) or defaults.get(status, "")
        said = f": {note}" if note else ""
        if status in self.credential_statuses:
            return self._error(CredentialsRefusedError, f"{where}{said}{tail}", response, status=status)
        if status in TRANSIENT_STATUSES or status >= 500:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""
            if retry_after is None and status == 429:  # no Retry-After: the reset of the budget at 0, if said
                resets = [b.reset_in for b in parse_rate_limits(response.headers) if b.remaining <= 0 and b.reset_in]
                if resets:
                    retry_after = max(0.0, max(resets))
                    wait = f" (rate limit resets in {retry_after:.0f} s)"
            return self._error(TransientError, f"{where}{said}{wait}{tail}", response, retry_after=retry_after, status=status)
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            target = url_label(urljoin(response.url or "", location)) if location else "nowhere"
            other = _host(target) if location else ""
            hint = f" (host {other} is not one this connection names)" if other and other not in self.hosts else ""
            return self._error(PermanentError, f"{where}: redirect to {target} not followed{hint}; set the connection's "
                               f"URL to the final address", response, status=status)
        return self._error(PermanentError, f"{where}{said}{tail}", response, status=status)

    # -- internals -----------------------------------------------------------------------------------
    def _error(self, cls: type[RemoteError], message: str, response: requests.Response | None = None,
               **kwargs: Any) -> RemoteError:
        return cls(scrub(message, self._secrets(response)), **kwargs)

    def _secrets(self, response: requests.Response | None) -> list[str]:
        """The connection's secrets, and the credentials the request carried (a token an auth refreshed)."""
        request = getattr(response, "request", None)
        sent = (request.headers.get("Authorization") if request is not None else None) or ""
        return [*self.secrets, sent, sent.partition(" ")[2]]

    def _url(self, url: str) -> str:
        if self.base_url and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", url):
            return f"{self.base_url.rstrip('/')}/{url.lstrip('/')}"
        return url

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RemoteError) and exc.retry_after is not None:
            return 0.0  # the pacer holds every thread until the Retry-After (or raises BudgetExhaustedError)
        return self._jitter(state)

    def _attempt(self, method: str, url: str, what: str, check: bool, kwargs: dict[str, Any], start: int | None) -> requests.Response:
        response = self._send(method, url, what, kwargs, start)
        if response.status_code == 401 and callable(getattr(self.auth, "refresh", None)):
            response.close()
            with self._refresh_lock:
                self.auth.refresh()
            response = self._send(method, url, what, kwargs, start)
        if check and (error := self.status_error(response, what)) is not None:
            response.close()
            raise error
        return response

    def _send(self, method: str, url: str, what: str, kwargs: dict[str, Any], start: int | None) -> requests.Response:
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise self._error(PermanentError, f"{_who(what)}bad URL for {self.label}: not http(s)://host/...")
        host = _host(url)
        if host not in self.hosts:
            raise self._error(PermanentError, f"{_who(what)}request to host {host} refused: not a host {self.label} names "
                              f"(nothing was sent)")
        if start is not None:
            kwargs["data"].seek(start)
        ticket = self.pacer.acquire(self.label, what)
        response = None
        try:
            response = self.session.request(method, url, **{"timeout": self.timeout, **kwargs},
                                            verify=self.verify, allow_redirects=False)
            return response
        except requests.RequestException as exc:
            raise self._request_error(what, exc) from None
        except OSError as exc:  # requests raises a bare OSError for a CA bundle path that is not there
            bundle = f"ca_bundle {self.ca_bundle!r}" if self.ca_bundle else "the CA bundle"
            raise self._error(PermanentError, f"{_who(what)}{self.label}: {bundle} cannot be used: {exc}") from None
        finally:
            retry_after = None
            if response is not None and (response.status_code in TRANSIENT_STATUSES or response.status_code >= 500):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self.pacer.done(ticket, response.headers if response is not None else None, retry_after)

    def _request_error(self, what: str, exc: requests.RequestException) -> RemoteError:
        who = _who(what)
        cause = _root_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            reason = cause.verify_message or cause.reason or "certificate verify failed"
            return self._error(PermanentError, f"{who}TLS certificate of {self.label} not accepted: {reason}. Fix the "
                               f"endpoint's certificate, or set ca_bundle on the connection to the CA that issued it")
        if isinstance(exc, requests.Timeout):
            seconds = self.timeout[0] if isinstance(exc, requests.ConnectTimeout) else self.timeout[1]
            return self._error(TransientError, f"{who}{self.label} did not answer within {seconds:g} s")
        if isinstance(exc, (requests.ConnectionError, ChunkedEncodingError)):
            reason = getattr(cause, "strerror", None) or type(cause).__name__
            return self._error(TransientError, f"{who}cannot reach {self.label}: {reason}")
        if isinstance(exc, (InvalidURL, InvalidSchema, MissingSchema)):
            return self._error(PermanentError, f"{who}bad URL for {self.label}: {type(exc).__name__}")
        return self._error(PermanentError, f"{who}request to {self.label} failed: {type(exc).__name__}")
