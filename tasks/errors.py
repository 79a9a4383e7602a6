"""Errors of a remote exchange (a connector's delivery, a source's listing, a token request).

Every remote call ends in one of three classes, and the engine acts on the class alone:

- TransientError: network errors, timeouts, 408/425/429/5xx: tried again with backoff (Retry-After
  honoured), then by the next run; the document stays pending.
- PermanentError: the remote refused this request (a 4xx, bad content): not tried again in the
  run; the ledger parks the document after `max_attempts` runs.
- CredentialsRefusedError: the remote refused the connection's credentials. No document is at
  fault: the run stops, fails naming the connection, and parks nothing.

BudgetExhaustedError is a TransientError for a call budget that is used up for hours (a daily rate
limit): the run stops sending and ends Completed, its documents left pending, saying when it resumes.

Messages name the document or connection and never hold a secret (tasks.secrets.scrub).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar


class RemoteError(Exception):
    """A remote exchange failed. `permanent` errors are not retried within a run."""

    permanent: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds the remote asked us to wait (Retry-After, rate-limit reset)
        self.status = status  # the HTTP status, where there was one


class TransientError(RemoteError):
    """Network errors, timeouts, 408/425/429/5xx: retried with backoff."""

    permanent = False


class PermanentError(RemoteError):
    """Refused for good: a 4xx, bad content, permission denied. Not retried within the run."""

    permanent = True


class CredentialsRefusedError(PermanentError):
    """The remote refused the connection's credentials (a login, a 401, an API key refused).

    Not the documents' fault: the sync run stops sending, fails naming the connection, and its
    documents stay `failed` for the next run, never parked for it."""


class BudgetExhaustedError(TransientError):
    """The connection's call budget is used up until `resumes_at` (a daily limit): stop for this run."""

    def __init__(self, message: str, *, resumes_at: datetime | None = None):
        super().__init__(message)
        self.resumes_at = resumes_at
