"""E-mail connector: one message per document, every file attached, over one SMTP connection per run.

Plain smtplib + email.message.EmailMessage, not prefect-email: prefect-email's
`email_send_message` is a Prefect task that opens a new SMTP connection per message
(one task run and one login per document), cannot set Message-ID, and its
`EmailServerCredentials.get_server` has no timeout, no CA bundle and no way to turn
verification off for a test server (and skips login on plain connections). We need one
connection per run, a deterministic Message-ID, size limits and 4xx/5xx classification,
which is all smtplib.

- Message-ID is ``<{package.idempotency_key}@docroute>``: a resend of the same document
  version carries the same id, so a mailbox (or a person) can recognise the duplicate.
  SMTP has no way to ask whether a message was already delivered, so no lookup ability.
- Recipients: the integration's `to` and `cc` (both in the envelope and the headers); in
  test mode only the connection's `test_recipient`.
- Subject and body are templates over package.values (``{number}``, ``{client}`` ...,
  with format specs); a placeholder the document lacks is a permanent error.
- Size: estimated from the files' base64 size before anything is read, then measured on
  the built message; over `max_message_bytes` (or the server's advertised SIZE) is a
  permanent error and nothing is sent. The message is built in memory (it is bounded by
  that limit, 10 MB by default).
- Errors: SMTP 4xx replies, dropped connections and timeouts are transient; 5xx replies,
  refused logins, TLS certificate failures and missing STARTTLS are permanent. A 250
  only means the first relay took the message (there is no delivery receipt).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import string
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from pydantic import Field, field_validator

from blocks.smtp import check_address
from tasks.connectors.base import (
    CheckResult,
    Connector,
    ConnectorOptions,
    CredentialsRefusedError,
    Delivery,
    DeliveryError,
    Mode,
    Package,
    PackageFile,
    PermanentDeliveryError,
    TransientDeliveryError,
    VerifyingReader,
)

logger = logging.getLogger(__name__)

HEADER_OVERHEAD = 4096  # headers, MIME boundaries and part headers, generously
READ_SIZE = 1024 * 1024


def template_placeholders(template: str) -> set[str]:
    """The placeholder names of a template ('{number:>8}' -> 'number'); ValueError if malformed."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class EmailOptions(ConnectorOptions):
    """An integration's e-mail settings: recipients and message templates."""

    to: list[str] = Field(min_length=1, description="Recipients (To). Capture mailboxes want their address in To.")
    cc: list[str] = Field(default_factory=list, description="Copy recipients (Cc).")
    subject: str = Field(
        default="{doc_type} {number} from {client}",
        description="Subject template; placeholders are the document's values, e.g. {number}, {client}, {doc_type}.",
    )
    body: str = Field(
        default="Please find attached {doc_type} {number} from {client}.\n",
        description="Plain-text body template, same placeholders as subject.",
    )

    @field_validator("to", "cc")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        return [check_address(v) for v in values]

    @field_validator("subject", "body")
    @classmethod
    def _template(cls, value: str) -> str:
        template_placeholders(value)  # raises ValueError on unbalanced braces
        return value

    def placeholders(self) -> set[str]:
        """Every placeholder the templates use (for configuration checks)."""
        return template_placeholders(self.subject) | template_placeholders(self.body)


def _code_error(code: int) -> type[DeliveryError]:
    return TransientDeliveryError if 400 <= code < 500 else PermanentDeliveryError


def _reply(exc: smtplib.SMTPResponseException) -> str:
    err = exc.smtp_error
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
    return f"{exc.smtp_code} {' '.join(text.split())}"[:300]


class EmailConnector(Connector):
    """Sends each package as one e-mail with the files attached."""

    options_model = EmailOptions
    options: EmailOptions

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._smtp: smtplib.SMTP | None = None

    # -- lifecycle ----------------------------------------------------------
    def open(self) -> None:
        if self._smtp is None:
            self._smtp = self._connect()

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                smtp.close()


    def _connect(self) -> smtplib.SMTP:
        try:
            return self.connection.connect()
        except Exception as exc:  # noqa: BLE001 - classified
            raise self._connect_error(exc) from None

    def _connect_error(self, exc: Exception) -> DeliveryError:
        block, label = self.connection, self.label
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return CredentialsRefusedError(
                f"{label}: login as {block.username!r} refused ({self.scrub(_reply(exc))}); check username and password"
            )
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return PermanentDeliveryError(f"{label}: {exc} (check the connection's security setting)")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermanentDeliveryError(
                f"{label}: TLS certificate not accepted: {exc.verify_message or exc.reason}. Fix the server's "
                f"certificate, or set ca_bundle on the connection to the CA that issued it"
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            return _code_error(exc.smtp_code)(f"{label}: server refused the session: {self.scrub(_reply(exc))}")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientDeliveryError(f"{label}: server closed the connection while logging in")
        if isinstance(exc, OSError):
            return TransientDeliveryError(f"{label}: cannot connect: {exc.strerror or type(exc).__name__}")
        return TransientDeliveryError(f"{label}: cannot connect: {type(exc).__name__}")

    # -- the interface ------------------------------------------------------
    def check(self) -> CheckResult:
        who = f" as {self.connection.username!r}" if self.connection.username else ""
        try:
            self.open()
            code, _ = self._smtp.noop()
        except DeliveryError as exc:
            return CheckResult(False, str(exc))
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            return CheckResult(False, f"{self.label}: connection lost during check: {type(exc).__name__}")
        if code != 250:
            return CheckResult(False, f"{self.label}: NOOP answered {code}")
        return CheckResult(True, f"{self.label}: connected{who}, server answers")

    def recipients(self) -> tuple[list[str], list[str]]:
        """(to, cc) for the current mode."""
        if self.mode == Mode.TEST:
            return [self.test_setting("test_recipient")], []
        return list(self.options.to), list(self.options.cc)

    def deliver(self, package: Package) -> Delivery:
        block = self.connection
        to, cc = self.recipients()
        subject = " ".join(self._render(package, self.options.subject, "subject").split())
        body = self._render(package, self.options.body, "body")
        estimate = HEADER_OVERHEAD + 2 * len(body.encode()) + sum(self._encoded_size(f) for f in package.files)
        if estimate > block.max_message_bytes:
            raise self._too_big(package, estimate, "about ")
        raw = self._build(package, to, cc, subject, body)
        if len(raw) > block.max_message_bytes:
            raise self._too_big(package, len(raw), "")
        refused = self._send(package, to + cc, raw)
        if refused:
            logger.warning("document %s: %s refused some recipients: %s", package.doc_id, self.label, refused)
        return Delivery(
            remote_ref=self.message_id(package),
            detail={"recipients": to + cc, "refused": refused, "bytes": len(raw)},
        )

    @staticmethod
    def message_id(package: Package) -> str:
        return f"<{package.idempotency_key}@docroute>"

    # -- building -----------------------------------------------------------
    def _render(self, package: Package, template: str, what: str) -> str:
        out = []
        values = package.values
        for literal, name, spec, conversion in string.Formatter().parse(template):
            out.append(literal)
            if name is None:
                continue
            if values.get(name) is None:
                raise PermanentDeliveryError(
                    f"document {package.doc_id}: e-mail {what} for {self.label} uses {{{name}}}, which this document "
                    f"does not have (it has: {', '.join(sorted(k for k, v in values.items() if v is not None))})"
                )
            value = values[name]
            try:
                if conversion:
                    value = string.Formatter().convert_field(value, conversion)
                out.append(format(value, spec or ""))
            except (ValueError, TypeError) as exc:
                raise PermanentDeliveryError(
                    f"document {package.doc_id}: e-mail {what} for {self.label}: cannot format {{{name}}} "
                    f"with {spec!r}: {exc}"
                ) from None
        return "".join(out)

    @staticmethod
    def _encoded_size(f: PackageFile) -> int:
        b64 = (f.size + 2) // 3 * 4
        return b64 + b64 // 76 * 2 + 512  # CRLF every 76 characters, plus the part's headers

    def _too_big(self, package: Package, size: int, about: str) -> PermanentDeliveryError:
        return PermanentDeliveryError(
            f"document {package.doc_id}: the e-mail would be {about}{size} bytes, more than max_message_bytes "
            f"({self.connection.max_message_bytes}) of {self.label}; nothing was sent"
        )

    def _read(self, package: Package, f: PackageFile) -> bytes:
        chunks = []
        try:
            with f.open() as src:
                reader = VerifyingReader(src, f)
                while chunk := reader.read(READ_SIZE):
                    chunks.append(chunk)
                reader.verify(package)
        except OSError as exc:
            raise TransientDeliveryError(
                f"document {package.doc_id}: cannot read source file {f.name} for {self.label}: {exc.strerror or exc}"
            ) from None
        return b"".join(chunks)

    def _build(self, package: Package, to: list[str], cc: list[str], subject: str, body: str) -> bytes:
        msg = EmailMessage()
        msg["Message-ID"] = self.message_id(package)
        msg["Date"] = formatdate(usegmt=True)
        msg["From"] = self.connection.from_address
        msg["To"] = ", ".join(to)
        if cc:
            msg["Cc"] = ", ".join(cc)
        msg["Subject"] = subject
        msg["X-Docroute-Document"] = " ".join(f"{package.doc_id} {package.version}".split())
        msg.set_content(body)
        for f in package.files:  # document first, sidecar JSON last, all as attachments
            maintype, _, subtype = f.media_type.partition("/")
            if not subtype:
                maintype, subtype = "application", "octet-stream"
            msg.add_attachment(self._read(package, f), maintype=maintype, subtype=subtype, filename=f.name)
        return msg.as_bytes(policy=policy.SMTP)

    # -- sending ------------------------------------------------------------
    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    def _send(self, package: Package, recipients: list[str], raw: bytes) -> dict[str, str]:
        where = f"document {package.doc_id}: {self.label}"
        for attempt in (1, 2):
            self.open()
            try:
                self._smtp.ehlo_or_helo_if_needed()
                limit = self._smtp.esmtp_features.get("size", "")
                if limit.isdigit() and 0 < int(limit) < len(raw):
                    raise PermanentDeliveryError(
                        f"{where} takes at most {limit} bytes per message; this one is {len(raw)} bytes; nothing was sent"
                    )
                refused = self._smtp.sendmail(self.connection.from_address, recipients, raw)
                return {rcpt: _reply(smtplib.SMTPResponseException(*r)) for rcpt, r in refused.items()}
            except smtplib.SMTPServerDisconnected:
                # Servers drop idle connections; before MAIL FROM nothing was sent, so reconnect once.
                self._drop()
                if attempt == 2:
                    raise TransientDeliveryError(f"{where} closed the connection while sending") from None
            except smtplib.SMTPRecipientsRefused as exc:
                codes = {rcpt: _reply(smtplib.SMTPResponseException(*r)) for rcpt, r in exc.recipients.items()}
                temporary = any(400 <= code < 500 for code, _ in exc.recipients.values())
                cls = TransientDeliveryError if temporary else PermanentDeliveryError
                raise cls(f"{where} refused every recipient: {self.scrub(str(codes))}") from None
            except smtplib.SMTPResponseException as exc:
                what = "sender" if isinstance(exc, smtplib.SMTPSenderRefused) else "message"
                raise _code_error(exc.smtp_code)(f"{where} refused the {what}: {self.scrub(_reply(exc))}") from None
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                raise TransientDeliveryError(f"{where}: connection failed while sending: {type(exc).__name__}") from None
        raise AssertionError("unreachable")
