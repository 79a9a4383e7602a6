"""Notifications: Prefect automations for failed runs and parked documents, and a failure e-mail hook.

Three pieces, each usable alone:

- `emit_parked`: the sync flow emits one Prefect event `docroute.document.parked` per document it
  parked as needs-attention in a run (resource `docroute.document.<client>-<integration>.<doc id>`,
  labels `docroute.integration`, `docroute.client`, `docroute.document`; payload: number, type, error),
  and one `docroute.integration.parked` for the run (resource `docroute.integration.<client>-<integration>`;
  payload: count, the first MAX_LISTED documents with number and error, how many more, the run).
  Errors are the same secret-free texts the ledger and the run's artifact hold.
- `setup_automations` (`docroute notify setup --block custom-webhook/ops`): creates or updates, by
  name, two automations that send through a notification block (Slack webhook, custom webhook, any
  block that can `notify`): a docroute-sync run entered Failed or Crashed; a run parked documents
  (one notification per run, listing them: a mass failure does not send one per document).
  The actions run on the Prefect server (its triggers and actions services).
- `notify_failure`: the sync flow's on_failure / on_crashed hook. E-mails the integration's
  `notify.email` (and DOCROUTE_NOTIFY_EMAIL) through an SMTP connection block: integration, run,
  state message and the documents that failed in the run with their errors. It never raises: a
  notification problem is logged and the run's own state stays what it was.
"""

from __future__ import annotations

import logging
import smtplib
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from deployments.config import parse_config
from tasks import ledger as L
from tasks.registry import load_block
from tasks.settings import get_settings

if TYPE_CHECKING:
    from deployments.schema import Integration

logger = logging.getLogger("docroute.notify")

PARKED_EVENT = "docroute.document.parked"  # one per parked document
RUN_PARKED_EVENT = "docroute.integration.parked"  # one per run that parked documents: what the automation notifies on
SYNC_FLOW = "docroute-sync"
FAILED_AUTOMATION = "docroute: sync run failed"
PARKED_AUTOMATION = "docroute: documents parked"
RETIRED_AUTOMATIONS = ("docroute: document parked",)  # an earlier version's (one notification per document)
MAX_LISTED = 20  # parked documents listed in one notification
MAX_ROWS = 50  # failed documents listed in one e-mail; the run's artifact has them all

FAILED_SUBJECT = "docroute: {{ flow_run.parameters['integration'] }} sync {{ flow_run.state.name }}"
FAILED_BODY = """\
docroute sync run {{ flow_run.name }} of integration {{ flow_run.parameters['integration'] }} ended {{ flow_run.state.name }}.

{{ flow_run.state.message }}

Run: {{ flow_run|ui_url or flow_run.id }}
The run's Artifacts tab has one row per document (sync-<client>-<integration>)."""
PARKED_SUBJECT = (
    "docroute: {{ event.resource['docroute.integration'] }} parked {{ event.payload.count }} "
    "document{{ 's' if event.payload.count != 1 }}: {{ event.payload.documents[0].id }}{{ ' and more' if event.payload.count > 1 }}"
)
PARKED_BODY = """\
{{ event.payload.count }} document{{ 's' if event.payload.count != 1 }} of integration \
{{ event.resource['docroute.integration'] }} parked as needs-attention in run {{ event.payload.run }}: \
each failed permanently on every try.
{% for d in event.payload.documents %}
- {{ d.id }}{{ ' (number ' ~ d.number ~ ')' if d.number }}: {{ d.error }}{% endfor %}
{% if event.payload.more %}... and {{ event.payload.more }} more: docroute parked list {{ event.resource['docroute.integration'] }}
{% endif %}
A parked document is tried again when its content changes. Once the cause is fixed, retry now:
docroute sync {{ event.resource['docroute.integration'] }} --document {{ event.payload.documents[0].id }}
docroute parked retry {{ event.resource['docroute.integration'] }} --all --reason "<what was fixed>\""""


# -- events -------------------------------------------------------------------
def emit_parked(integ: Integration, outcomes: list[Any]) -> int:
    """Emit `docroute.document.parked` for each outcome parked in this run, then one
    `docroute.integration.parked` listing them; returns how many documents. Never raises."""
    from prefect.events import emit_event
    from prefect.runtime import flow_run

    parked = [o for o in outcomes if o.status == "needs-attention"]
    if not parked:
        return 0
    labels = {"docroute.integration": integ.key, "docroute.client": integ.client}
    integration_id = f"docroute.integration.{integ.slug}"
    sent = 0
    try:
        for o in parked:
            emit_event(
                event=PARKED_EVENT,
                resource={"prefect.resource.id": f"docroute.document.{integ.slug}.{o.doc_id}", "prefect.resource.name": o.doc_id,
                          **labels, "docroute.document": o.doc_id},
                related=[{"prefect.resource.id": integration_id, "prefect.resource.role": "integration", "prefect.resource.name": integ.key}],
                payload={"number": o.number, "document_type": o.doc_type, "error": o.error[:1000]},
            )
            sent += 1
        emit_event(
            event=RUN_PARKED_EVENT,
            resource={"prefect.resource.id": integration_id, "prefect.resource.name": integ.key, **labels},
            payload={
                "count": len(parked),
                "documents": [{"id": o.doc_id, "number": o.number, "error": o.error[:500]} for o in parked[:MAX_LISTED]],
                "more": max(0, len(parked) - MAX_LISTED),
                "run": flow_run.name or str(flow_run.id or ""),
            },
        )
    except Exception as exc:  # noqa: BLE001 - a notification never breaks a run
        logger.warning("%s: parked events not emitted: %s", integ.key, type(exc).__name__)
    return sent


# -- automations ----------------------------------------------------------------
def _notification_block_id(block: str):
    """The block document id of a notification block, 'type-slug/name' (e.g. slack-webhook/ops)."""
    from prefect.blocks.core import Block

    if "/" not in block:
        raise ValueError(f"notification block {block!r}: give it as type-slug/name, e.g. slack-webhook/ops or custom-webhook/ops")
    try:
        loaded = Block.load(block)
    except ValueError as exc:
        raise ValueError(f"notification block {block!r} not found on the Prefect server: {exc}") from None
    if "notify" not in loaded.get_block_capabilities():
        raise ValueError(f"block {block!r} cannot send notifications; use a Slack webhook, custom webhook or another notification block")
    return loaded._block_document_id


def automations(block_document_id, flow_name: str = SYNC_FLOW) -> list:
    """The two automations, not yet saved: failed/crashed sync runs, and parked documents."""
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    failed = AutomationCore(
        name=FAILED_AUTOMATION,
        description=f"A {flow_name} run ended Failed or Crashed: notify through the block. Created by `docroute notify setup`.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": flow_name},
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=FAILED_SUBJECT, body=FAILED_BODY)],
    )
    parked = AutomationCore(
        name=PARKED_AUTOMATION,
        description="A sync run parked documents as needs-attention: one notification per run, listing them. "
        "Created by `docroute notify setup`.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "docroute.integration.*"},
            expect={RUN_PARKED_EVENT},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=PARKED_SUBJECT, body=PARKED_BODY)],
    )
    return [failed, parked]


def setup_automations(block: str, flow_name: str = SYNC_FLOW) -> list[tuple[str, str, Any]]:
    """Create or update (by name) the two automations; returns (name, 'created' | 'updated', id)."""
    from prefect.client.orchestration import get_client

    block_id = _notification_block_id(block)
    done = []
    with get_client(sync_client=True) as client:
        for automation in automations(block_id, flow_name):
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:  # an older duplicate would notify twice
                    client.delete_automation(extra.id)
                done.append((automation.name, "updated", existing[0].id))
            else:
                done.append((automation.name, "created", client.create_automation(automation)))
        for name in RETIRED_AUTOMATIONS:  # it would notify once per document next to the new one
            for old in client.read_automations_by_name(name):
                client.delete_automation(old.id)
                done.append((name, "deleted", old.id))
    return done


# -- the e-mail hook --------------------------------------------------------------
def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure / on_crashed hook of the sync flow: e-mail the integration's recipients. Never raises."""
    from prefect.logging.loggers import flow_run_logger

    run_logger = flow_run_logger(flow_run, flow)
    try:
        sent_to = send_failure_email(flow_run, state)
        if sent_to:
            run_logger.info("failure e-mail sent to %s", ", ".join(sent_to))
    except Exception as exc:  # noqa: BLE001 - must not hide the run's own failure
        run_logger.warning("failure e-mail not sent: %s", exc)


def _recipients(integration: str) -> tuple[list[str], str | None]:
    """(addresses, smtp block ref) for an integration: its notify section, then the global settings."""
    settings = get_settings()
    emails, smtp = [], None
    try:
        config, _ = parse_config(settings.config_dir, [integration.split("/")[0]])
        integ = config.integrations.get(integration)
        if integ is not None:
            emails, smtp = list(integ.notify.email), integ.notify.smtp
    except Exception as exc:  # noqa: BLE001 - a broken config may be why the run failed: use the global settings
        logger.warning("%s: cannot read its notify settings (%s); using DOCROUTE_NOTIFY_*", integration, type(exc).__name__)
    emails += [a for a in settings.notify_email_list() if a not in emails]
    return emails, smtp or settings.notify_smtp


def _failed_documents(integration: str, run_id: str) -> list[dict] | str:
    """Ledger rows failed or parked in this run, or why they cannot be read."""
    try:
        ledger = L.Ledger.from_settings()
        try:
            rows = ledger.rows(integration, statuses=(L.FAILED, L.NEEDS_ATTENTION))
        finally:
            ledger.dispose()
    except Exception as exc:  # noqa: BLE001 - the ledger may be what failed
        return f"(the ledger could not be read: {type(exc).__name__})"
    return [r for r in rows if r.get("last_run") == run_id]


def failure_message(flow_run: Any, state: Any, sender: str, recipients: list[str]) -> EmailMessage:
    """The failure e-mail: integration, run, state message and the documents that failed in the run."""
    from prefect.utilities.urls import url_for

    integration = str((flow_run.parameters or {}).get("integration", "?"))
    msg = EmailMessage()
    msg["Subject"] = f"docroute: {integration} sync {state.name}: {flow_run.name}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(idstring=str(flow_run.id), domain="docroute")
    lines = [
        f"The docroute sync run {flow_run.name} of integration {integration} ended {state.name}.",
        "",
        state.message or "(no state message)",
        "",
        f"Run id: {flow_run.id}",
    ]
    try:
        link = url_for("flow-run", obj_id=flow_run.id)
    except Exception:  # noqa: BLE001 - a link is a nicety
        link = None
    if link:
        lines.append(f"Run: {link}")
    docs = _failed_documents(integration, str(flow_run.id))
    if isinstance(docs, str):
        lines += ["", docs]
    elif docs:
        lines += ["", f"Documents that failed in this run ({len(docs)}):", ""]
        for r in docs[:MAX_ROWS]:
            number = f" (number {r['number']})" if r.get("number") else ""
            lines.append(f"- {r['doc_id']}{number}: {r['status']} after {r['attempts']} attempt(s): {r.get('last_error') or ''}")
        if len(docs) > MAX_ROWS:
            lines.append(f"- ... and {len(docs) - MAX_ROWS} more; see the run's artifact")
    lines += [
        "",
        "Failed documents are tried again by the next run; parked (needs-attention) ones when their",
        f"content changes, or now with: docroute sync {integration} --document <id>",
    ]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_failure_email(flow_run: Any, state: Any) -> list[str]:
    """Send the failure e-mail if anyone is to get it; returns the recipients. Raises on SMTP problems."""
    integration = str((flow_run.parameters or {}).get("integration", "?"))
    recipients, smtp_ref = _recipients(integration)
    if not recipients:
        return []
    if not smtp_ref:
        raise ValueError(f"{integration}: failure e-mail recipients are set but no SMTP connection (notify.smtp or DOCROUTE_NOTIFY_SMTP)")
    block = load_block(smtp_ref)
    msg = failure_message(flow_run, state, block.from_address, recipients)
    secrets = block.secret_values()
    text = msg.as_string()
    if any(s in text for s in secrets):  # belt and braces: a secret never leaves in an e-mail
        raise ValueError(f"{integration}: failure e-mail not sent: it would contain a secret of {smtp_ref}")
    try:
        with block.connect() as smtp:
            smtp.send_message(msg)
    except (smtplib.SMTPException, OSError) as exc:
        detail = str(exc)
        for s in secrets:
            detail = detail.replace(s, "***")
        raise RuntimeError(f"{block.label()}: {type(exc).__name__}: {detail[:300]}") from None
    return recipients

