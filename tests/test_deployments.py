"""Deployments generated from deployments/: one per integration, and a redeploy keeps what ops set in the UI."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from prefect.client.orchestration import get_client

from deployments.config import load_config
from deployments.deploy import FLOW_NAME, apply_deployments


async def _read(name):
    async with get_client() as client:
        return await client.read_deployment_by_name(f"{FLOW_NAME}/{name}")


async def _ops_changes(name):
    """What an ops user does in the UI: set the interval to 2h and pause the deployment."""
    from prefect.client.schemas.schedules import IntervalSchedule

    async with get_client() as client:
        dep = await client.read_deployment_by_name(f"{FLOW_NAME}/{name}")
        await client.update_deployment_schedule(dep.id, dep.schedules[0].id, schedule=IntervalSchedule(interval=timedelta(hours=2)))
        await client.pause_deployment(dep.id)


def test_one_deployment_per_integration_with_slugged_schedule_and_limit(workspace):
    client = f"c{workspace.tag}"
    workspace.integration("invoices", client=client, schedule={"interval": "5m"}, filters={"document_types": ["invoice"]})
    workspace.integration("orders", client=client, schedule={"cron": "*/10 7-19 * * 1-5"}, filters={"document_types": ["order_confirmation"]})
    workspace.integration("alternate", client=client, enabled=False, schedule={"interval": "1h"}, filters={"document_types": ["credit_note"]})
    names = apply_deployments(load_config(only=None))
    assert f"{FLOW_NAME}/{client}-invoices" in names and f"{FLOW_NAME}/{client}-orders" in names

    inv = asyncio.run(_read(f"{client}-invoices"))
    assert inv.parameters == {"integration": f"{client}/invoices"}
    assert set(inv.tags) >= {f"client:{client}", "connector:local-folder-connection"}
    assert inv.global_concurrency_limit is not None and inv.global_concurrency_limit.limit == 1
    assert [s.slug for s in inv.schedules] == [f"{client}-invoices-schedule"]
    assert inv.schedules[0].schedule.interval == timedelta(minutes=5) and inv.schedules[0].active
    orders = asyncio.run(_read(f"{client}-orders"))
    assert orders.schedules[0].schedule.cron == "*/10 7-19 * * 1-5"
    assert asyncio.run(_read(f"{client}-alternate")).schedules == []  # on demand only


def test_redeploy_keeps_the_interval_and_pause_set_in_the_ui(workspace):
    client = f"d{workspace.tag}"
    workspace.integration("invoices", client=client, schedule={"interval": "5m"})
    apply_deployments(load_config())
    asyncio.run(_ops_changes(f"{client}-invoices"))
    apply_deployments(load_config())  # e.g. after a config change and redeploy
    dep = asyncio.run(_read(f"{client}-invoices"))
    assert dep.paused is True
    assert len(dep.schedules) == 1
    assert dep.schedules[0].schedule.interval == timedelta(hours=2)
    assert dep.schedules[0].slug == f"{client}-invoices-schedule"


def test_status_deployment_every_15_minutes_keeps_a_ui_pause_and_parked_is_on_demand(workspace):
    from deployments.deploy import PARKED_DEPLOYMENT, PARKED_FLOW, STATUS_DEPLOYMENT, STATUS_FLOW

    workspace.integration("invoices", client=f"p{workspace.tag}")
    names = apply_deployments(load_config())
    assert f"{STATUS_FLOW}/{STATUS_DEPLOYMENT}" in names and f"{PARKED_FLOW}/{PARKED_DEPLOYMENT}" in names

    async def read(name):
        async with get_client() as client:
            return await client.read_deployment_by_name(name)

    async def pause(deployment_id, paused):
        async with get_client() as client:
            await (client.pause_deployment if paused else client.resume_deployment)(deployment_id)

    status = asyncio.run(read(f"{STATUS_FLOW}/{STATUS_DEPLOYMENT}"))
    assert [s.slug for s in status.schedules] == [f"{STATUS_DEPLOYMENT}-schedule"]
    assert status.schedules[0].schedule.interval == timedelta(minutes=15)
    asyncio.run(pause(status.id, True))
    try:
        apply_deployments(load_config())
        again = asyncio.run(read(f"{STATUS_FLOW}/{STATUS_DEPLOYMENT}"))
        assert again.paused is True and [s.slug for s in again.schedules] == [f"{STATUS_DEPLOYMENT}-schedule"]
    finally:
        asyncio.run(pause(status.id, False))
    parked = asyncio.run(read(f"{PARKED_FLOW}/{PARKED_DEPLOYMENT}"))
    assert parked.schedules == [] and parked.parameter_openapi_schema["required"] == ["integration", "action"]


def test_the_server_schedules_runs_for_a_deployed_interval(workspace):
    """The server's scheduler creates the runs of a deployed schedule (SQLAlchemy 2.1 broke this in Prefect
    3.8 without an error anywhere but the server log: hence the <2.1 pin in pyproject.toml)."""
    import time

    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    client_id = f"s{workspace.tag}"
    workspace.integration("invoices", client=client_id, schedule={"interval": "5m"})
    apply_deployments(load_config())
    dep = asyncio.run(_read(f"{client_id}-invoices"))

    async def scheduled():
        async with get_client() as client:
            runs = await client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))
            return [r for r in runs if r.state and r.state.is_scheduled()]

    async def remove() -> None:  # its scheduled runs would crowd the session server's run lists
        async with get_client() as client:
            await client.delete_deployment(dep.id)

    deadline = time.monotonic() + 90  # the recent-deployments scheduler looks every 5 s, the main one every 60 s
    try:
        runs = asyncio.run(scheduled())
        while not runs and time.monotonic() < deadline:
            time.sleep(2)
            runs = asyncio.run(scheduled())
    finally:
        asyncio.run(remove())
    assert runs, "the server created no scheduled run for a deployment with a 5-minute interval"
    times = sorted(r.expected_start_time for r in runs)
    assert all(b - a == timedelta(minutes=5) for a, b in zip(times, times[1:]))
