"""Integration status, like Banqup's integration overview: per client and integration, whether its
schedule is active or paused, its last successful sync, what was delivered today and this week,
what is pending, failed or needs attention (with the last error), and its cursor.

    docroute status                          # every integration, printed as a table
    docroute status --client acme --excel status.xlsx

The flow `docroute-status` reads the client files, the ledger (three grouped queries for all
integrations) and the Prefect API (each integration's deployment and its runs), and publishes a
table artifact under a fixed key (`integration-status`, or `integration-status-<client>`), so the
Artifacts page keeps the history. It is deployed with a 15-minute schedule by deployments/deploy.py.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.runtime import flow_run

from deployments.config import Config, parse_config
from deployments.schema import Integration
from tasks import confirmations
from tasks import ledger as L
from tasks.documents import client_key
from tasks.settings import get_settings
from tasks.sources.base import SourceAbility

SYNC_FLOW = "docroute-sync"  # deployments/deploy.py FLOW_NAME; not imported so this module stays light
ARTIFACT_KEY = "integration-status"

# States of an integration's deployment
ACTIVE, PAUSED, ON_DEMAND, NOT_DEPLOYED = "active", "paused", "on demand", "not deployed"
# Columns, in order (also the CSV/Excel header)
COLUMNS = [
    "client", "integration", "state", "schedule", "last successful sync", "last run", "delivered today",
    "delivered this week", "last delivery", "pending", "waiting for confirmation", "oldest waiting since", "waiting for",
    "buyer responses", "failed",
    "needs attention", "discarded", "last error", "unclaimed in source", "cursor",
]
TIME_COLUMNS = ("last successful sync", "last delivery", "oldest waiting since", "cursor")


def artifact_key(client: str | None = None) -> str:
    """The table artifact's key: one history for all integrations, one per client when filtered."""
    return f"{ARTIFACT_KEY}-{client}" if client else ARTIFACT_KEY


def _run_name() -> str:
    client = flow_run.parameters.get("client")
    return f"status {client + ' ' if client else ''}{datetime.now(timezone.utc):%Y-%m-%d %H:%M}"


def _every(schedule: Any) -> str:
    """'every 5m', 'cron */10 7-19 * * 1-5 (Europe/Brussels)', from a Prefect or a config schedule."""
    interval = getattr(schedule, "interval", None)
    if interval is not None:
        seconds = int(interval.total_seconds() if isinstance(interval, timedelta) else interval)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds % size == 0:
                return f"every {seconds // size}{unit}"
        return f"every {seconds}s"
    cron = getattr(schedule, "cron", None)
    tz = getattr(schedule, "timezone", None)
    return f"cron {cron}" + (f" ({tz})" if tz and tz != "UTC" else "") if cron else str(schedule)


def _deployments(integrations: list[Integration]) -> dict[str, dict[str, Any]]:
    """Per integration key: state, schedule, last completed run's end, last run (state and time)."""
    out: dict[str, dict[str, Any]] = {}
    names = {i.slug: i for i in integrations}  # deployment name = integration slug (deployments/deploy.py)
    with get_client(sync_client=True) as client:
        found = {}
        slugs = list(names)
        for i in range(0, len(slugs), 200):  # the API returns at most 200 per call
            for dep in client.read_deployments(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[SYNC_FLOW])),
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=slugs[i : i + 200])),
                limit=200,
            ):
                found[dep.name] = dep
        for slug, integ in names.items():
            dep = found.get(slug)
            if dep is None:
                out[integ.key] = {"state": NOT_DEPLOYED, "schedule": _every(integ.schedule) if integ.schedule and integ.enabled else "", "last_ok": None, "last_run": ""}
                continue
            schedules = list(dep.schedules or [])
            if dep.paused or (schedules and not any(s.active for s in schedules)):
                state = PAUSED
            elif not schedules:
                state = ON_DEMAND
            else:
                state = ACTIVE

            def newest(states: FlowRunFilterStateType, sort: FlowRunSort):
                runs = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        deployment_id=FlowRunFilterDeploymentId(any_=[dep.id]), state=FlowRunFilterState(type=states)
                    ),
                    sort=sort,
                    limit=1,
                )
                return runs[0] if runs else None

            completed = newest(FlowRunFilterStateType(any_=[StateType.COMPLETED]), FlowRunSort.END_TIME_DESC)
            run = newest(FlowRunFilterStateType(not_any_=[StateType.SCHEDULED]), FlowRunSort.START_TIME_DESC)
            last_run = ""
            if run is not None and run.state is not None:
                when = run.start_time or run.expected_start_time
                last_run = f"{run.state.name} {when:%Y-%m-%d %H:%M} UTC" if when else run.state.name
            out[integ.key] = {
                "state": state,
                "schedule": ", ".join(_every(s.schedule) for s in schedules),
                "last_ok": completed.end_time if completed else None,
                "last_run": last_run,
            }
    return out


def unclaimed(config: Config, integrations: list[Integration]) -> dict[str, list[dict[str, Any]]]:
    """Per source block: its approved documents that no integration takes, each with the reason (the
    document's client matches no integration reading the source; or no integration of that client
    takes its type, sub-organisation or tags). Client ids are compared trimmed and case-folded.
    Sources that cannot list every client's documents (SourceAbility.CENSUS) are left out."""
    out: dict[str, list[dict[str, Any]]] = {}
    readers: dict[str, list[Integration]] = {}
    for integ in integrations:
        if integ.enabled:
            readers.setdefault(integ.source, []).append(integ)
    for ref, integs in sorted(readers.items()):
        try:
            source = config.block(ref).source()
            if SourceAbility.CENSUS not in source.abilities:
                continue
            with source:
                scan = source.census()
        except Exception as exc:  # noqa: BLE001 - one unreachable source must not hide the others' status
            get_run_logger().warning("unclaimed documents of %s not known: %s", ref, exc)
            continue
        by_client: dict[str, list[Integration]] = {}
        for integ in integs:
            by_client.setdefault(client_key(integ.client), []).append(integ)
        rows = []
        for cand in scan.candidates:
            if not cand.approved:
                continue
            takers = by_client.get(client_key(cand.client))
            if not takers:
                reason = f"client {cand.client!r} matches no integration reading {ref}"
            elif not any(i.filters.matches(cand.type, cand.sub_organisation, cand.tags) for i in takers):
                reason = (f"no integration of client {takers[0].client} takes it (type {cand.type!r}, sub-organisation "
                          f"{cand.sub_organisation!r}, tags {cand.tags}); add it to an integration's filters, then backfill")
            else:
                continue
            rows.append({"document": cand.doc_id, "client": cand.client, "type": cand.type,
                         "approved at": cand.approved_at.isoformat() if cand.approved_at else "", "reason": reason})
        out[ref] = rows
    return out


def client_config(client: str | None) -> Config:
    """The configuration of every client (or one); a broken client file is logged and does not hide the others."""
    config, problems = parse_config(get_settings().config_dir, [client] if client else None)
    for problem in problems:
        get_run_logger().warning("configuration problem: %s", problem)
    return config


def unclaimed_key(source: str) -> str:
    """The unclaimed-documents artifact of a source block, e.g. unclaimed-capture-inbox-folder-main."""
    return "unclaimed-" + re.sub(r"[^a-z0-9-]+", "-", source.lower()).strip("-")


def collect_status(client: str | None = None, as_of: datetime | None = None, tz: str = "UTC",
                   unclaimed_docs: dict[str, list[dict[str, Any]]] | None = None, config: Config | None = None) -> list[dict[str, Any]]:
    """One row per integration (sorted by client and name); times are timezone-aware datetimes."""
    zone = ZoneInfo(tz)
    now = (as_of or datetime.now(timezone.utc)).astimezone(zone)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week_start = day_start - timedelta(days=day_start.weekday())  # Monday
    if config is None:
        config = client_config(client)
    integrations = sorted(config.integrations.values(), key=lambda i: (i.client, i.name))
    ledger = L.Ledger.from_settings()
    try:
        summary = ledger.status_summary([i.key for i in integrations], day_start, week_start)
        confirming = confirmations.summary(ledger, [i.key for i in integrations])  # access points: what they wait for, buyers' answers
    finally:
        ledger.dispose()
    deployments = _deployments(integrations)
    rows = []
    for integ in integrations:
        s, d = summary[integ.key], deployments[integ.key]
        counts = s["counts"]
        error = ""
        if s["last_error"]:
            error = s["last_error"] if s["last_error_doc"] in s["last_error"] else f"{s['last_error_doc']}: {s['last_error']}"
        rows.append(
            {
                "client": integ.client,
                "integration": integ.key,
                "state": d["state"],
                "schedule": d["schedule"],
                # the deployment's last Completed run; without one, the last run that moved the cursor
                "last successful sync": d["last_ok"] or s["cursor_updated"],
                "last run": d["last_run"],
                "delivered today": s["delivered_today"],
                "delivered this week": s["delivered_week"],
                "last delivery": s["last_delivered"],
                "pending": counts.get(L.PENDING, 0),
                "waiting for confirmation": counts.get(L.SUBMITTED, 0),  # submitted: the destination decides later
                "oldest waiting since": s["oldest_submitted"],
                **confirming[integ.key],  # "waiting for" and "buyer responses" (tasks/confirmations.py)
                "failed": counts.get(L.FAILED, 0),
                "needs attention": counts.get(L.NEEDS_ATTENTION, 0),
                "discarded": counts.get(L.DISCARDED, 0),
                "last error": error[:500],
                "unclaimed in source": len((unclaimed_docs or {}).get(integ.source, [])),
                "cursor": s["checked_until"],  # the time the last scheduled run checked up to
            }
        )
    return rows


def to_frame(rows: list[dict[str, Any]], tz: str = "UTC"):
    """A pandas DataFrame of the rows; times in `tz` without an offset (Excel cannot hold one)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in TIME_COLUMNS:
        frame[col] = pd.to_datetime(frame[col], utc=True).dt.tz_convert(tz).dt.tz_localize(None)
    return frame


def write_file(rows: list[dict[str, Any]], path: str | Path, kind: str = "csv", tz: str = "UTC") -> Path:
    """Write the status as CSV (kind "csv") or as an Excel workbook (kind "excel", .xlsx through openpyxl)."""
    path = Path(path).expanduser()
    frame = to_frame(rows, tz)
    if kind == "excel":
        frame.to_excel(path, index=False, sheet_name="integration status", engine="openpyxl")
    else:
        frame.to_csv(path, index=False)
    return path


def _shown(value: Any, zone: ZoneInfo) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")
    return value


@flow(name="docroute-status", flow_run_name=_run_name, log_prints=False)
def integration_status(
    client: str | None = None,
    csv: str | None = None,
    excel: str | None = None,
    tz: str = "UTC",
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Status of every integration (or one client's) as a table artifact, optionally CSV or Excel.

    Args:
        client: only this client's integrations (artifact key `integration-status-<client>`).
        csv: also write the table to this CSV file (on the machine running the flow).
        excel: also write the table to this .xlsx file.
        tz: timezone of "today", "this week" (from Monday) and of the times shown.
        as_of: count "today" and "this week" as of this time (default: now).
    """
    logger = get_run_logger()
    ZoneInfo(tz)  # an unknown timezone fails before anything is read
    config = client_config(client)
    found = unclaimed(config, list(config.integrations.values()))
    for ref, docs in found.items():
        create_table_artifact(
            key=unclaimed_key(ref),
            table=docs or [{"document": "", "client": "", "type": "", "approved at": "", "reason": "every document is taken"}],
            description=f"Documents in {ref} that no integration takes: {len(docs)}",
        )
        if docs:
            logger.warning("%s: %d documents no integration takes, e.g. %s: %s", ref, len(docs), docs[0]["document"], docs[0]["reason"])
    rows = collect_status(client, as_of, tz, found, config)
    zone = ZoneInfo(tz)
    table = [{k: _shown(v, zone) for k, v in row.items()} for row in rows]
    states = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
    attention = [r["integration"] for r in rows if r["needs attention"] or r["failed"]]
    description = (
        f"{len(rows)} integrations: " + (", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none")
        + (f"; failed or needing attention: {', '.join(attention)}" if attention else "")
    )
    create_table_artifact(
        key=artifact_key(client),
        table=table or [{c: "" for c in COLUMNS} | {"client": client or "", "state": "no integrations"}],
        description=description,
    )
    for row in rows:
        if row["needs attention"] or row["failed"]:
            logger.warning(
                "%s: %d failed, %d need attention; last error: %s",
                row["integration"], row["failed"], row["needs attention"], row["last error"],
            )
    for kind, path in (("csv", csv), ("excel", excel)):
        if path:
            logger.info("wrote %s", write_file(rows, path, kind, tz))
    logger.info("%s", description)
    return rows
