"""Turn the integrations under deployments/ into Prefect deployments: one per integration.

    python -m deployments.deploy            # create/update the deployments, then serve them (a long-running process)
    python -m deployments.deploy --no-serve # only create/update them (e.g. before starting a served process elsewhere)

Each deployment is named after client and integration (e.g. "acme-invoices-to-erp"),
runs the `docroute-sync` flow with that integration, has concurrency limit 1,
tags "client:<client>" and "connector:<block type>", and an interval or cron
schedule with a slug. The schedule in the client file is the initial one:
once a deployment exists, its schedules and its paused state belong to the
Prefect UI, and a redeploy keeps whatever an ops user set there.

Next to them: `docroute-status/integration-status` and `docroute-confirm/confirm-deliveries`
(every 15 minutes, same rule for UI changes), `docroute-parked/parked-documents` and
`docroute-backfill/backfill` (on demand, with parameters).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.deployments.runner import RunnerDeployment
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

from deployments.config import Config, load_config
from deployments.schema import Integration
from flows.backfill import backfill
from flows.confirm import confirm_deliveries
from flows.parked import parked_documents
from flows.status import integration_status
from flows.sync import sync
from flows.worker import IDLE_STATE, WORKER_TYPE, DocrouteWorker
from tasks.settings import get_settings

FLOW_NAME = "docroute-sync"
# Next to the sync deployments: the status report on a schedule, and the parked-documents flow on demand.
STATUS_FLOW, STATUS_DEPLOYMENT, STATUS_INTERVAL = "docroute-status", "integration-status", timedelta(minutes=15)
PARKED_FLOW, PARKED_DEPLOYMENT = "docroute-parked", "parked-documents"
BACKFILL_FLOW, BACKFILL_DEPLOYMENT = "docroute-backfill", "backfill"
CONFIRM_FLOW, CONFIRM_DEPLOYMENT, CONFIRM_INTERVAL = "docroute-confirm", "confirm-deliveries", timedelta(minutes=15)


def deployment_name(integ: Integration) -> str:
    return integ.slug


def schedule_slug(integ: Integration) -> str:
    return f"{integ.slug}-schedule"


ANCHOR = datetime(2026, 1, 1, tzinfo=timezone.utc)


def anchor_of(integ: Integration, interval: timedelta) -> datetime:
    """Where an integration's interval schedule is anchored: spread over the interval by its key, so a
    thousand integrations at 5 minutes come due a few a second instead of all at once."""
    offset = int.from_bytes(hashlib.sha256(integ.key.encode()).digest()[:4], "big") % max(int(interval.total_seconds()), 1)
    return ANCHOR + timedelta(seconds=offset)


def _initial_schedules(integ: Integration) -> list[DeploymentScheduleCreate]:
    s = integ.schedule
    if s is None or not integ.enabled:
        return []
    if s.interval is not None:
        schedule = IntervalSchedule(interval=s.interval, timezone=s.timezone, anchor_date=anchor_of(integ, s.interval))
    else:
        schedule = CronSchedule(cron=s.cron, timezone=s.timezone)
    return [DeploymentScheduleCreate(schedule=schedule, active=True, slug=schedule_slug(integ))]


async def _existing(names: list[str], flow_name: str = FLOW_NAME) -> dict[str, object]:
    found = {}
    async with get_client() as client:
        for name in names:
            try:
                found[name] = await client.read_deployment_by_name(f"{flow_name}/{name}")
            except Exception:  # noqa: BLE001 - ObjectNotFound: a new deployment
                continue
    return found


def build_deployments(config: Config) -> list[RunnerDeployment]:
    """RunnerDeployments for every integration, keeping schedules and pauses set in the UI."""
    integrations = list(config.integrations.values())
    existing = asyncio.run(_existing([deployment_name(i) for i in integrations]))
    out = []
    for integ in integrations:
        name = deployment_name(integ)
        connector = integ.connection.split("/")[0]
        deployment = sync.to_deployment(
            name=name,
            parameters={"integration": integ.key},
            tags=[f"client:{integ.client}", f"connector:{connector}", "docroute"],
            concurrency_limit=1,
            description=integ.description or f"Export {integ.key} through {integ.connection}",
        )
        current = existing.get(name)
        if current is None:
            deployment.schedules = _initial_schedules(integ)
        else:
            deployment.schedules = [
                DeploymentScheduleCreate(schedule=s.schedule, active=s.active, slug=s.slug) for s in current.schedules
            ]
            deployment.paused = current.paused
        out.append(deployment)
    return out + service_deployments()


def _every(flow, flow_name: str, name: str, interval: timedelta, description: str) -> RunnerDeployment:
    """A service deployment on an interval; once it exists, its schedule and pause belong to the UI."""
    deployment = flow.to_deployment(name=name, tags=["docroute"], concurrency_limit=1, description=description)
    current = asyncio.run(_existing([name], flow_name)).get(name)
    if current is None:
        deployment.schedules = [DeploymentScheduleCreate(schedule=IntervalSchedule(interval=interval), active=True, slug=f"{name}-schedule")]
    else:
        deployment.schedules = [DeploymentScheduleCreate(schedule=s.schedule, active=s.active, slug=s.slug) for s in current.schedules]
        deployment.paused = current.paused
    return deployment


def service_deployments() -> list[RunnerDeployment]:
    """`docroute-status/integration-status` and `docroute-confirm/confirm-deliveries` every 15 minutes (a
    schedule or pause set in the UI is kept, as for the sync deployments); `docroute-parked/parked-documents`
    and `docroute-backfill/backfill` on demand, with parameters."""
    status = _every(integration_status, STATUS_FLOW, STATUS_DEPLOYMENT, STATUS_INTERVAL,
                    "Status of every integration: active or paused, last sync, delivered, pending, failed, parked")
    confirm = _every(confirm_deliveries, CONFIRM_FLOW, CONFIRM_DEPLOYMENT, CONFIRM_INTERVAL,
                     "Verdicts of destinations that confirm later (access points) on submitted documents")
    parked = parked_documents.to_deployment(
        name=PARKED_DEPLOYMENT, tags=["docroute"],
        description="Retry or discard an integration's parked (needs-attention) documents; run with parameters",
    )

    # on demand only (no schedule): `prefect deployment run 'docroute-backfill/backfill' --param integration=...`
    backfill_deployment = backfill.to_deployment(
        name=BACKFILL_DEPLOYMENT, tags=["docroute"],
        description="Backfill a date range for one integration (client/name) or all of a client's, in chunks; resumable",
    )
    return [status, confirm, parked, backfill_deployment]


DEPLOY_THREADS = 8


def apply_deployments(config: Config, work_pool: str | None = None) -> list[str]:
    """Create or update the deployments on the Prefect server; returns their names.

    `work_pool`: attach them to this work pool (created if missing, type docroute: `docroute worker`
    runs them), with the automation that crashes runs whose worker died. None: no work pool (served
    by `docroute deploy --serve`)."""
    if work_pool:
        ensure_work_pool(work_pool)
        ensure_zombie_automation()
    deployments = build_deployments(config)
    if not deployments:
        return []

    def apply(deployment: RunnerDeployment) -> str:
        deployment.apply(work_pool_name=work_pool)
        return f"{deployment.flow_name}/{deployment.name}"

    # The first one alone (it creates the flow), then several at once: one deployment is a handful of
    # API round trips, so 1,000 one after the other take minutes.
    names = [apply(deployments[0])]
    with ThreadPoolExecutor(DEPLOY_THREADS) as pool:  # each in a copy of this context: Prefect's settings live there
        names += [f.result() for f in [pool.submit(contextvars.copy_context().run, apply, d) for d in deployments[1:]]]
    return names


def ensure_work_pool(name: str) -> None:
    """The work pool `name`, of type docroute, created with the worker's base job template if missing."""
    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type=WORKER_TYPE, base_job_template=DocrouteWorker.get_default_base_job_template(),
                                                   description="docroute's flow runs, run by `docroute worker` in warm processes"))
            return
    if pool.type != WORKER_TYPE:
        raise ValueError(f"work pool {name!r} is of type {pool.type!r}, not {WORKER_TYPE!r}: use another name, or `docroute deploy --serve`")


ZOMBIE_AUTOMATION = "docroute: crash runs whose worker died"
ZOMBIE_AFTER = timedelta(seconds=90)  # three missed heartbeats (flows/worker.py beats every 30 s)
# A run's events are named after its state's name, not its type (a settled idle poll sends "Idle").
# Starts the watch: the claim, a cancellation (the worker must still end the run) and each heartbeat.
# Running is not one: runs served without heartbeats (`docroute deploy --serve`, Prefect's runner) on
# the same server would be crashed after ZOMBIE_AFTER; the engine's first beat follows Running at once.
ZOMBIE_STARTS = ("Pending", "Cancelling", "heartbeat")
# Ends it: the run is alive (Running, a heartbeat) or needs no worker (final, or AwaitingRetry, which
# is Scheduled: any worker runs it again when due).
ZOMBIE_ENDS = ("Running", "Retrying", "Cancelling", "heartbeat", "Completed", IDLE_STATE, "Failed", "TimedOut",
               "Cancelled", "Crashed", "AwaitingRetry")


def zombie_automation(after: timedelta = ZOMBIE_AFTER) -> AutomationCore:
    """Prefect's recipe for zombie runs: a flow run whose heartbeats stop without a final state is marked
    Crashed (the run's worker was killed or lost its machine), so it is never left Running.

    The watch starts at the claim (Pending), not at the first heartbeat: the engine sends its first
    heartbeat only once the run is Running, from the worker's process, so a worker killed between its
    claim and that beat left the run Pending for good, no heartbeat ever seen. The Pending event is
    the server's own, so it is there even when the worker died."""
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="A flow run that stopped sending heartbeats without a final state is marked Crashed.",
        enabled=True,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            after={f"prefect.flow-run.{name}" for name in ZOMBIE_STARTS},
            expect={f"prefect.flow-run.{name}" for name in ZOMBIE_ENDS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=after,
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {int(after.total_seconds())} s: its worker died")],
    )


def ensure_zombie_automation(after: timedelta = ZOMBIE_AFTER) -> None:
    """Create or update, by name, the zombie-run automation."""
    automation = zombie_automation(after)
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(ZOMBIE_AUTOMATION)
        if existing:
            client.update_automation(existing[0].id, automation)
        else:
            client.create_automation(automation)


def serve_deployments(config: Config, limit: int | None = None) -> None:
    """Serve every integration's deployment from this process until Ctrl-C."""
    from prefect import serve

    # pause_on_shutdown=False: stopping the serving process must not pause the schedules ops set.
    serve(*build_deployments(config), pause_on_shutdown=False, limit=limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-serve", action="store_true", help="create or update the deployments on a work pool, then exit")
    parser.add_argument("--work-pool", default=get_settings().work_pool,
                        help="with --no-serve: the work pool of type docroute (created if missing) that `docroute worker` polls "
                             "(default: DOCROUTE_WORK_POOL or docroute); '' for none")
    parser.add_argument("--limit", type=int, default=None, help="at most this many sync runs at once when serving")
    args = parser.parse_args(argv)
    config = load_config(partial=True)  # one client's broken file leaves out that client only
    for problem in config.problems:
        print(f"not deployed: {problem}", file=sys.stderr)
    if args.no_serve:
        for name in apply_deployments(config, args.work_pool or None):
            print(name)
        if args.work_pool:
            print(f"Start a worker for them: docroute worker --pool {args.work_pool}")
        if config.problems:
            sys.exit(f"{len(config.problems)} problems: the integrations of {', '.join(sorted(config.bad_clients))} were left out")
    else:
        serve_deployments(config, args.limit)


if __name__ == "__main__":
    main()

