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
import sys
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.deployments.runner import RunnerDeployment

from deployments.config import Config, load_config
from deployments.schema import Integration

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


def _initial_schedules(integ: Integration) -> list[DeploymentScheduleCreate]:
    s = integ.schedule
    if s is None or not integ.enabled:
        return []
    if s.interval is not None:
        schedule = IntervalSchedule(interval=s.interval, timezone=s.timezone)
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
    from flows.sync import sync

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
    from flows.confirm import confirm_deliveries
    from flows.parked import parked_documents
    from flows.status import integration_status

    status = _every(integration_status, STATUS_FLOW, STATUS_DEPLOYMENT, STATUS_INTERVAL,
                    "Status of every integration: active or paused, last sync, delivered, pending, failed, parked")
    confirm = _every(confirm_deliveries, CONFIRM_FLOW, CONFIRM_DEPLOYMENT, CONFIRM_INTERVAL,
                     "Verdicts of destinations that confirm later (access points) on submitted documents")
    parked = parked_documents.to_deployment(
        name=PARKED_DEPLOYMENT, tags=["docroute"],
        description="Retry or discard an integration's parked (needs-attention) documents; run with parameters",
    )
    from flows.backfill import backfill

    # on demand only (no schedule): `prefect deployment run 'docroute-backfill/backfill' --param integration=...`
    backfill_deployment = backfill.to_deployment(
        name=BACKFILL_DEPLOYMENT, tags=["docroute"],
        description="Backfill a date range for one integration (client/name) or all of a client's, in chunks; resumable",
    )
    return [status, confirm, parked, backfill_deployment]


def apply_deployments(config: Config) -> list[str]:
    """Create or update the deployments on the Prefect server; returns their names."""
    names = []
    for deployment in build_deployments(config):
        deployment.apply()
        names.append(f"{deployment.flow_name}/{deployment.name}")
    return names


def serve_deployments(config: Config, limit: int | None = None) -> None:
    """Serve every integration's deployment from this process until Ctrl-C."""
    from prefect import serve

    # pause_on_shutdown=False: stopping the serving process must not pause the schedules ops set.
    serve(*build_deployments(config), pause_on_shutdown=False, limit=limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-serve", action="store_true", help="create or update the deployments, then exit")
    parser.add_argument("--limit", type=int, default=None, help="at most this many sync runs at once when serving")
    args = parser.parse_args(argv)
    config = load_config(partial=True)  # one client's broken file leaves out that client only
    for problem in config.problems:
        print(f"not deployed: {problem}", file=sys.stderr)
    if args.no_serve:
        for name in apply_deployments(config):
            print(name)
        if config.problems:
            sys.exit(f"{len(config.problems)} problems: the integrations of {', '.join(sorted(config.bad_clients))} were left out")
    else:
        serve_deployments(config, args.limit)


if __name__ == "__main__":
    main()

