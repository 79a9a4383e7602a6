"""Conformance harness for the e-mail connector: a real aiosmtpd SMTP server on 127.0.0.1.

The server requires AUTH (LOGIN/PLAIN, checked against one user and password; allowed
without TLS, as this is loopback), stores every accepted message with its envelope, and
can be scripted to answer the next RCPT or DATA commands with given replies (451, 550 ...).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from blocks.smtp import SmtpConnection
from tasks.connectors.email import EmailConnector
from tests.connectors.conformance import Harness
from tests.net import free_port

USER = "docroute@example.test"
RECIPIENT = "ap@client.example"




@dataclass
class Stored:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.content, policy=policy.default)


class SmtpServer:
    """aiosmtpd in a thread; `messages` holds what was accepted, in order."""

    def __init__(self, password: str, port: int | None = None, **smtp_kwargs):
        self.password = password
        self.messages: list[Stored] = []
        self.logins: list[str] = []
        self._rcpt_replies: list[str] = []
        self._data_replies: list[str] = []
        self._lock = threading.Lock()
        self.port = port or free_port()
        settings = {"auth_required": True, "auth_require_tls": False, **smtp_kwargs}
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, authenticator=self._authenticate, **settings
        )
        self.controller.start()

    def stop(self) -> None:
        if self.controller._thread is not None:  # a test may have stopped it already
            self.controller.stop()

    def script(self, *, rcpt: list[str] = (), data: list[str] = ()) -> None:
        """Answer the next RCPT / DATA commands with these replies instead of accepting."""
        with self._lock:
            self._rcpt_replies.extend(rcpt)
            self._data_replies.extend(data)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and (
            auth_data.password == self.password.encode()
        )
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self._lock:
            reply = self._rcpt_replies.pop(0) if self._rcpt_replies else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self._lock:
            reply = self._data_replies.pop(0) if self._data_replies else None
            if reply:
                return reply
            self.messages.append(Stored(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


class SuiteConnection:
    """What the conformance suite gets: the real block, whose connector() supplies the
    recipients an integration would (the suite passes no integration options). Not a
    Block subclass, so Prefect's block registry keeps the real SmtpConnection."""

    def __init__(self, block: SmtpConnection):
        self.block = block

    def connector(self, mode=None, options=None):
        return self.block.connector(mode, options if options is not None else {"to": [RECIPIENT]})

    def __getattr__(self, name):
        return getattr(self.block, name)


class EmailHarness(Harness):
    def __init__(self, server: SmtpServer):
        self.server = server
        self.bad_password = "wrong-" + server.password[::-1]
        self.secrets = (server.password, self.bad_password)

    def connection(self) -> SuiteConnection:
        return SuiteConnection(self.block())

    def block(self, **overrides) -> SmtpConnection:
        """The real connection block pointing at the server, with valid credentials."""
        settings = {
            "host": "127.0.0.1",
            "port": self.server.port,
            "security": "none",
            "username": USER,
            "password": self.server.password,
            "from_address": "docroute@example.test",
            "timeout": 10,
        }
        settings.update(overrides)
        return SmtpConnection(**settings)

    def bad_credentials(self) -> SuiteConnection:
        return SuiteConnection(self.block(password=self.bad_password))

    def stored_for(self, package) -> list[Stored]:
        """Messages received for this package (by its document header), oldest first."""
        tag = f"{package.doc_id} {package.version}"
        return [s for s in self.server.messages if s.message["X-Docroute-Document"] == tag]

    def received(self, package, f):
        wanted = EmailConnector.message_id(package)
        for stored in self.server.messages:
            msg = stored.message
            if msg["Message-ID"] != wanted:
                continue
            for part in msg.iter_attachments():
                if part.get_filename() == f.name:
                    return part.get_payload(decode=True)
        return None

    def copies(self, package) -> int:
        return len({s.message["Message-ID"] for s in self.stored_for(package)})


@pytest.fixture
def email_harness():
    server = SmtpServer(password="pw-" + socket.gethostname()[:4] + "-s3cr3t-9f2c")
    yield EmailHarness(server)
    server.stop()
