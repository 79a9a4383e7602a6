"""The document state machine: the one place that decides what status a document version takes.

    pending ──attempt──▶ pending (sending) ──delivered──▶ delivered
       │                      │      └──submitted──▶ submitted ──accepted──▶ delivered
       │                      │                          └──rejected──▶ failed | needs-attention
       │                      └──failed──▶ failed (transient: always; permanent: until max_attempts)
       │                                     └──permanent, max_attempts reached──▶ needs-attention (parked)
       └── a newer version, or gone from the source or the filters ──▶ superseded
    needs-attention ──operator──▶ discarded          needs-attention | discarded ──retry (named)──▶ tried again

`pending` and `failed` are open: every scheduled run looks at them again. `delivered`,
`needs-attention` and `discarded` are settled: nothing happens until the document changes or an
operator names it. `submitted` waits for the destination's verdict (Connector.status). The ledger
(tasks/ledger.py) stores what these functions return and never decides a status itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PENDING = "pending"
SUBMITTED = "submitted"  # the destination took it and decides later (Ability.ASYNC_STATUS)
DELIVERED = "delivered"
FAILED = "failed"
NEEDS_ATTENTION = "needs-attention"  # parked: failed permanently on max_attempts runs
DISCARDED = "discarded"  # a parked document an operator decided not to deliver (row and events kept)
SUPERSEDED = "superseded"  # a newer version exists, or the document left the source or the filters

OPEN = (PENDING, FAILED)  # looked at again by every scheduled run
PARKED = (NEEDS_ATTENTION, DISCARDED)  # settled by a person, until named again
STATUSES = (PENDING, SUBMITTED, DELIVERED, FAILED, NEEDS_ATTENTION, DISCARDED, SUPERSEDED)

# Events of the audit trail that end an attempt, by the status they lead to.
ALREADY_PRESENT = "already-present"  # a delivery an earlier attempt had made (found by lookup or at the destination)
ACCEPTED = "accepted"  # the destination accepted a submitted document
REJECTED = "rejected"  # the destination rejected a submitted document


class IllegalTransition(ValueError):
    """An operator asked for a transition the document's status does not allow."""


@dataclass(frozen=True)
class Decision:
    """A status to write, the values that go with it, and the audit event."""

    status: str | None  # None: the status stays what it is (a new row starts pending)
    values: dict[str, Any]
    event: str
    detail: str | None = None


def settled(row: Mapping[str, Any], targeted: bool = False, versions: Iterable[Mapping[str, Any]] = ()) -> bool:
    """Nothing to do for this version: delivered, submitted (waiting for the verdict), or parked or
    discarded (unless the run names the document: a retry of a parked one). A delivered version is
    not settled once another version of the document was delivered after it (`versions`: the
    document's other rows): the source went back to it, so the destination must too."""
    status = row["status"]
    if status == DELIVERED and replaced(row, versions):
        return False
    return status in (DELIVERED, SUBMITTED) or (status in PARKED and not targeted)


def replaced(row: Mapping[str, Any], versions: Iterable[Mapping[str, Any]]) -> bool:
    """Was this delivered version replaced at the destination by a later delivery of another version?"""
    at = row["delivered_at"]
    return at is not None and any(
        r["version"] != row["version"] and r["status"] == DELIVERED and r["delivered_at"] is not None and r["delivered_at"] > at
        for r in versions
    )


def supersedes(row: Mapping[str, Any]) -> bool:
    """Is this row (another version of a document now being sent) replaced by the new version?
    Open and parked versions are; delivered, submitted and discarded ones keep their history."""
    return row["status"] in OPEN + (NEEDS_ATTENTION,)


def after_failure(attempts_before: int, error: str, *, permanent: bool, max_attempts: int) -> Decision:
    """A failed attempt: counted; a permanent error parks the document once it failed max_attempts runs."""
    attempts = attempts_before + 1
    status = NEEDS_ATTENTION if permanent and attempts >= max_attempts else FAILED
    return Decision(status, {"attempts": attempts, "last_error": error[:2000], "sending_since": None}, status, error[:2000])


def after_delivery(remote_ref: str | None, *, already_present: bool, accepted: bool, detail: str | None, at) -> Decision:
    """A delivery the destination confirmed: delivered, or submitted when its verdict comes later."""
    values = {"remote_ref": remote_ref, "sending_since": None, "last_error": None, "detail": detail}
    if not accepted:
        return Decision(SUBMITTED, {**values, "submitted_at": at}, SUBMITTED, remote_ref)
    return Decision(DELIVERED, {**values, "delivered_at": at}, ALREADY_PRESENT if already_present else DELIVERED, remote_ref)


def after_confirmation(row: Mapping[str, Any], state: str, reason: str, *, max_attempts: int, detail: str | None, at) -> Decision | None:
    """The destination's verdict on a submitted document; None while it is still pending.

    A rejection is a permanent failure of that attempt: parked once the document failed max_attempts runs."""
    if row["status"] != SUBMITTED:
        raise IllegalTransition(f"document {row['doc_id']}: is {row['status']}, not submitted")
    if state == ACCEPTED:
        return Decision(DELIVERED, {"delivered_at": at, "last_error": None, "detail": detail}, ACCEPTED, reason or None)
    if state == REJECTED:
        failed = after_failure(row["attempts"], f"document {row['doc_id']}: rejected by the destination: {reason}",
                               permanent=True, max_attempts=max_attempts)
        return Decision(failed.status, {**failed.values, "detail": detail}, REJECTED, failed.detail)
    if detail is not None and detail != row.get("detail"):
        return Decision(SUBMITTED, {"detail": detail, "last_error": reason[:2000] or None}, "waiting", reason or None)
    return None


def waiting(message: str) -> Decision:
    """Could not be read yet (still being written, approved in the future): kept open, no attempt counted."""
    return Decision(None, {"last_error": message[:2000]}, "waiting", message[:2000])


def discard(row: Mapping[str, Any], detail: str) -> Decision:
    """An operator gives up on a parked document."""
    if row["status"] != NEEDS_ATTENTION:
        raise IllegalTransition(f"document {row['doc_id']}: is {row['status']}; only a parked (needs-attention) document can be discarded")
    return Decision(DISCARDED, {}, DISCARDED, detail)


def may_retry(row: Mapping[str, Any]) -> bool:
    """An operator may ask for a parked or discarded document to be tried again."""
    return row["status"] in PARKED
