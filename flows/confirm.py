"""The confirmation flow: ask destinations that decide later about the deliveries waiting for their verdict.

    docroute confirm                          # every integration with submitted documents
    docroute confirm acme/invoices-to-pagero

Every sync run already asks about its integration's submitted documents (oldest first, up to a
limit) before it ends; this flow does the same between runs, for verdicts that take longer than a
sync interval (an access point's validation, a buyer's response). A verdict is recorded by the
document state machine (tasks/engine/states.py): accepted -> delivered; rejected -> a permanent
failure with the destination's reason, parked after max_attempts. The run's table artifact
`confirmations` lists every verdict; the run ends Failed naming the rejected documents.
Deployed every 15 minutes by `docroute deploy` (`docroute-confirm/confirm-deliveries`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed

from deployments.config import ConfigError, load_config, parse_config
from flows.sync import SyncFailed, build_run
from tasks import ledger as L
from tasks.engine.model import RunFailed, RunOptions
from tasks.settings import get_settings

ARTIFACT_KEY = "confirmations"


def _run_name() -> str:
    target = flow_run.parameters.get("integration") or "all integrations"
    return f"confirm {target} {datetime.now(timezone.utc):%Y-%m-%d %H:%M}"


@flow(name="docroute-confirm", flow_run_name=_run_name, log_prints=False, validate_parameters=True)
def confirm_deliveries(integration: str | None = None) -> list[dict[str, Any]]:
    """Record the destinations' verdicts on submitted deliveries (all integrations, or one "client/name")."""
    logger = get_run_logger()
    if integration:
        config = load_config(only=integration)
        targets = [config.get(integration)]
    else:
        config, problems = parse_config(get_settings().config_dir)
        for problem in problems:  # one broken client file must not hold up the others' confirmations
            logger.warning("configuration problem: %s", problem)
        targets = list(config.integrations.values())
    ledger = L.Ledger.from_settings()
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    run_id = str(flow_run.id or "local")
    try:
        for integ in targets:
            if not ledger.submitted(integ.key, limit=1):
                continue
            try:
                result = build_run(integ, config, ledger, RunOptions(), run_id, logger).confirm_only()
            except (RunFailed, ConfigError) as exc:
                errors.append(str(exc))
                continue
            waiting = len(ledger.submitted(integ.key))
            rows += [{"integration": integ.key, "document": o.doc_id, "status": o.status, "error": o.error} for o in result.outcomes]
            logger.info("%s: %d verdicts, %d still waiting", integ.key, len(result.outcomes), waiting)
    finally:
        ledger.dispose()
    rejected = [r for r in rows if r["status"] != "accepted"]
    create_table_artifact(
        key=ARTIFACT_KEY,
        table=sorted(rows, key=lambda r: r["status"] == "accepted") or [{"integration": "", "document": "", "status": "no verdicts", "error": ""}],
        description=f"Verdicts of destinations that confirm later: {len(rows) - len(rejected)} accepted, {len(rejected)} rejected",
    )
    if rejected or errors:
        named = "; ".join([f"{r['integration']} {r['document']}: {r['error']}" for r in rejected[:10]] + errors)
        message = f"{len(rejected)} documents rejected{', ' + str(len(errors)) + ' integrations not reached' if errors else ''}: {named}"
        return Failed(message=message, data=SyncFailed(message))
    return rows
