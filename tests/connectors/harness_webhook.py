"""Conformance harness for the webhook connector: a real HTTP(S) receiver on 127.0.0.1.

The receiver (http.server in a thread) does what a careful endpoint does: checks the
bearer token or basic credentials, verifies every request's Standard Webhooks signature
with the independent `standardwebhooks` package (401 when it fails), dedups on
webhook-id (the first body is stored, repeats are counted), and decodes the files from
either body format. It can be scripted to answer the next requests with given statuses,
headers, bodies and delays. Every attempt is recorded (path, headers, body).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import os
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from math import floor
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError, hmac_data

from blocks.webhook import WebhookConnection
from tests.connectors.conformance import Harness
from tests.fakes.base import parse_multipart


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


class _BinaryBodyWebhook(Webhook):
    """standardwebhooks' verifier, for bodies that are not UTF-8 (multipart with a PDF).

    standardwebhooks 1.1 decodes the body as UTF-8 and signs the re-encoded text, so it
    raises on binary bodies. This subclass is given the body latin-1-decoded (one char per
    byte) and signs those bytes back unchanged; header parsing, timestamp tolerance,
    rotation (several v1 signatures) and the constant-time compare stay the library's.
    """

    def sign(self, msg_id: str, timestamp: dt.datetime, data: str) -> str:
        stamp = str(floor(timestamp.replace(tzinfo=dt.timezone.utc).timestamp()))
        mac = hmac_data(self._whsecret, f"{msg_id}.{stamp}.".encode() + data.encode("latin-1"))
        return f"v1,{base64.b64encode(mac).decode()}"


def verify_signature(secret: str, body: bytes, headers: dict[str, str]) -> None:
    """Raise WebhookVerificationError unless one of the request's signatures is `secret`'s."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        _BinaryBodyWebhook(secret).verify(body.decode("latin-1"), headers, json_parse=False)
    else:
        Webhook(secret).verify(text, headers, json_parse=False)


def _filename(disposition: str) -> str:
    value = disposition.split('filename="', 1)[1].rsplit('"', 1)[0]
    return value.replace("%22", '"').replace("%0D", "\r").replace("%0A", "\n")


@dataclass
class Scripted:
    """One scripted answer: sleep `delay`, then answer `status` (None: answer normally)."""

    status: int | None = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


@dataclass
class Attempt:
    path: str
    headers: dict[str, str]
    body: bytes
    client: tuple[str, int]  # the client's address and port: one port = one reused connection


@dataclass
class Received:
    webhook_id: str
    payload: str  # "json" or "multipart"
    document: dict
    files: dict[str, bytes]


class Receiver:
    """A webhook endpoint running in a thread; see the module docstring."""

    def __init__(self, secrets: list[str], *, bearer: str | None = None, basic: tuple[str, str] | None = None,
                 tls: ssl.SSLContext | None = None):
        self.secrets = list(secrets)
        self.bearer = bearer
        self.basic = basic
        self.attempts: list[Attempt] = []
        self.deliveries: dict[str, Received] = {}
        self.repeats: Counter[str] = Counter()
        self.pings: list[dict] = []
        self._script: list[Scripted] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.receiver = self
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "https" if tls else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = f"{self.base_url}/hooks/docroute"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def script(self, *answers: Scripted) -> None:
        """Answer the next len(answers) requests with these, in order."""
        with self._lock:
            self._script.extend(answers)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _next_scripted(self) -> Scripted | None:
        with self._lock:
            return self._script.pop(0) if self._script else None

    def handle(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        auth = headers.get("authorization", "")
        if self.bearer is not None and not hmac.compare_digest(auth.encode(), f"Bearer {self.bearer}".encode()):
            return 401, {}, b"missing or wrong bearer token"
        if self.basic is not None:
            expected = "Basic " + base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            if not hmac.compare_digest(auth.encode(), expected.encode()):
                return 401, {"WWW-Authenticate": 'Basic realm="hooks"'}, b"missing or wrong basic credentials"
        for secret in self.secrets:
            try:
                verify_signature(secret, body, headers)
                break
            except WebhookVerificationError:
                continue
        else:
            return 401, {}, b"invalid signature"
        ctype = headers.get("content-type", "")
        files: dict[str, bytes] = {}
        if ctype.startswith("application/json"):
            message = json.loads(body)
            payload = "json"
            for f in message.get("document", {}).get("files", []):
                files[f["name"]] = base64.b64decode(f["content_base64"], validate=True)
        elif ctype.startswith("multipart/form-data"):
            payload = "multipart"
            message = None
            for part_headers, content in parse_multipart(body, ctype):
                disposition = part_headers.get("content-disposition", "")
                if 'name="metadata"' in disposition:
                    message = json.loads(content)
                elif "filename=" in disposition:
                    files[_filename(disposition)] = content
            assert message is not None, "multipart body without a metadata part"
        else:
            return 415, {}, b"unsupported content type"
        if message.get("type") == "docroute.check":
            self.pings.append(message)
            return 200, {"Content-Type": "application/json"}, b'{"ok": true}'
        webhook_id = headers["webhook-id"]
        with self._lock:
            if webhook_id in self.deliveries:
                self.repeats[webhook_id] += 1
                answer = {"id": f"rcv-{webhook_id}", "duplicate": True}
            else:
                self.deliveries[webhook_id] = Received(webhook_id, payload, message["document"], files)
                answer = {"id": f"rcv-{webhook_id}"}
        return 200, {"Content-Type": "application/json"}, json.dumps(answer).encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the connector reuses its connection
    # Headers and body go out in two writes: with Nagle on, each answer waits for the client's
    # delayed ACK (~40 ms a request, 20 s for 500 documents).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        receiver: Receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {k.lower(): v for k, v in self.headers.items()}
        with receiver._lock:
            receiver.attempts.append(Attempt(self.path, headers, body, self.client_address))
        scripted = receiver._next_scripted()
        if scripted is not None:
            time.sleep(scripted.delay)
        if scripted is not None and scripted.status is not None:
            answer = (scripted.status, scripted.headers, scripted.body)
        else:
            answer = receiver.handle(headers, body)
        status, out_headers, out = answer
        try:
            self.send_response(status)
            for name, value in out_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        except OSError:  # the client gave up (timeout test)
            self.close_connection = True


def server_tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


class WebhookHarness(Harness):
    def __init__(self, receiver: Receiver, secret: str, token: str):
        self.receiver = receiver
        self.secret = secret
        self.token = token
        self.bad_secret = new_secret()
        self.secrets = (secret, secret.removeprefix("whsec_"), token, self.bad_secret)

    def connection(self, **overrides) -> WebhookConnection:
        settings = {
            "url": self.receiver.url,
            "signing_secrets": [self.secret],
            "auth": "bearer",
            "bearer_token": self.token,
            "timeout": 10,
        }
        settings.update(overrides)
        return WebhookConnection(**settings)

    def bad_credentials(self) -> WebhookConnection:
        return self.connection(signing_secrets=[self.bad_secret])

    def received(self, package, f):
        got = self.receiver.deliveries.get(package.idempotency_key)
        return got.files.get(f.name) if got else None

    def copies(self, package) -> int:
        return 1 if package.idempotency_key in self.receiver.deliveries else 0


@pytest.fixture
def webhook_harness():
    secret, token = new_secret(), "tok-" + base64.b32encode(os.urandom(15)).decode()
    receiver = Receiver([secret], bearer=token)
    yield WebhookHarness(receiver, secret, token)
    receiver.stop()
