"""`docroute`: the command line. Thin wrappers over the config, the flows and the deployments."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime


def _validate(args) -> int:
    from deployments.checks import warnings
    from deployments.config import load_config

    config = load_config(check_blocks=not args.offline)
    for warning in warnings(config):
        print(f"warning: {warning}")
    print(f"OK: {len(config.integrations)} integrations valid in {config.config_dir}")
    return 0


def _list(args) -> int:
    from deployments.config import parse_config
    from tasks.settings import get_settings

    config, problems = parse_config(get_settings().config_dir)
    for integ in config.integrations.values():
        sched = integ.schedule
        every = "on demand" if not integ.enabled or sched is None else (f"every {sched.interval}" if sched.interval else f"cron {sched.cron}")
        types = ",".join(integ.filters.document_types) or "all types"
        print(f"{integ.key:40} {integ.connection:45} {types:35} {integ.mode:10} {every}")
    for p in problems:
        print(f"problem: {p}", file=sys.stderr)
    return 1 if problems else 0


def _preview(args) -> int:
    from deployments.config import load_config
    from tasks.documents import SourceProblem
    from tasks.mapping import Lookups, MappingError, preview

    config = load_config(only=args.integration)
    integ = config.get(args.integration)
    with config.block(integ.source).source(integ) as source:
        found = source.find(args.document, integ.client)
        if found is None:
            print(f"document {args.document} is not in {source.label} for client {integ.client}", file=sys.stderr)
            return 1
        doc = found if isinstance(found, SourceProblem) else source.fetch(found)
    if isinstance(doc, SourceProblem):
        print(doc.message, file=sys.stderr)
        return 1
    try:
        print(json.dumps(preview(doc, integ, Lookups(config, integ)), indent=2, default=str, ensure_ascii=False))
    except MappingError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


def _deploy(args) -> int:
    from deployments.deploy import main as deploy_main

    deploy_main([] if args.serve else ["--no-serve", "--work-pool", args.work_pool])
    return 0


def _worker(args) -> int:
    import os

    os.environ["DOCROUTE_WARM"] = "1"  # keep ledgers and blocks between runs (tasks.settings)
    from tasks.settings import get_settings

    get_settings.cache_clear()
    from flows.worker import serve_worker

    serve_worker(args.pool, name=args.name, threads=args.threads, run_once=args.once)
    return 0


def _check(args) -> int:
    from flows.checks import check_connections

    state = check_connections(connections=args.connection or None, return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, list):
        for row in rows:
            print(f"{'OK  ' if row['ok'] else 'FAIL'} {row['connection']} ({row['mode']}): {row['message']}")
    else:
        print(f"{state.name}: {state.message}")
    return 0 if state.is_completed() else 1


def _notify_setup(args) -> int:
    from flows.notify import setup_automations

    try:
        done = setup_automations(args.block)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    for name, what, automation_id in done:
        print(f"{what}: automation {name!r} ({automation_id})" + ("" if what == "deleted" else f" -> {args.block}"))
    return 0


def _reconcile(args) -> int:
    from flows.reconcile import reconcile

    state = reconcile(integration=args.integration, prefix=args.prefix, hashes=args.hashes, use_source=not args.no_source, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, dict) and not result.get("listable", True):
        print(f"{state.name}: {result['message']}")
    else:
        print(f"{state.name}: {state.message or ''}")
    return 0 if state.is_completed() else 1


def _confirm(args) -> int:
    from flows.confirm import confirm_deliveries

    state = confirm_deliveries(integration=args.integration, return_state=True)
    rows = state.result(raise_on_failure=False)
    if isinstance(rows, list):
        for row in rows:
            print(f"{row['integration']} {row['document']}: {row['status']} {row['error']}".rstrip())
    print(f"{state.name}: {state.message or ''}")
    return 0 if state.is_completed() else 1


def _status(args) -> int:
    from flows.status import integration_status

    state = integration_status(client=args.client, csv=args.csv, excel=args.excel, tz=args.tz, return_state=True)
    rows = state.result(raise_on_failure=False)
    if not isinstance(rows, list):
        print(f"{state.name}: {state.message}", file=sys.stderr)
        return 1
    print(_status_table(rows, args.tz))
    for row in rows:
        if row["last error"]:
            print(f"{row['integration']}: {row['needs attention']} need attention, {row['failed']} failed; last error: {row['last error']}")
    for path in (args.csv, args.excel):
        if path:
            print(f"wrote {path}")
    return 0


def _status_table(rows: list[dict], tz: str) -> str:
    """Text left-aligned, numbers right-aligned, times in `tz` to the minute."""
    from zoneinfo import ZoneInfo

    if not rows:
        return "no integrations"
    cols = [("integration", "integration"), ("state", "state"), ("schedule", "schedule"), ("last successful sync", "last sync"),
            ("delivered today", "today"), ("delivered this week", "week"), ("pending", "pending"), ("waiting for confirmation", "confirming"), ("failed", "failed"),
            ("needs attention", "parked"), ("discarded", "discarded"), ("cursor", "cursor")]
    # what access points are still doing and what buyers answered: shown once any integration has something to say
    for col in ("waiting for", "buyer responses"):
        if any(r.get(col) for r in rows):
            cols.insert(-1, (col, col))
    zone = ZoneInfo(tz)

    def cell(v) -> str:
        return "-" if v in (None, "") else v.astimezone(zone).strftime("%Y-%m-%d %H:%M") if isinstance(v, datetime) else str(v)

    table = [[title for _, title in cols]] + [[cell(r[c]) for c, _ in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    numeric = [isinstance(rows[0][c], int) for c, _ in cols]
    return "\n".join(
        "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(line, widths, numeric)).rstrip() for line in table
    )


def _parked(args) -> int:
    import getpass

    if args.action == "list":
        from deployments.config import load_config
        from flows.parked import current_rows
        from tasks import ledger as L

        load_config(only=args.integration, check_blocks=False).get(args.integration)  # names a misspelt integration
        ledger = L.Ledger.from_settings()
        try:
            rows = current_rows(ledger, args.integration, args.document or None, (L.NEEDS_ATTENTION, L.DISCARDED))
        finally:
            ledger.dispose()
        if not rows:
            print(f"{args.integration}: no parked or discarded documents")
        for r in rows.values():
            print(f"{r['doc_id']:30} {r['status']:16} attempts {r['attempts']:<3} {r['updated_at']:%Y-%m-%d %H:%M} {r['last_error'] or ''}")
        return 0
    from flows.parked import parked_documents

    if bool(args.document) == bool(args.all):
        print("name documents with --document ID (repeatable) or use --all", file=sys.stderr)
        return 2
    state = parked_documents(
        integration=args.integration, action=args.action, document_ids=args.document or None, all_parked=args.all,
        reason=args.reason or "", by=args.by or getpass.getuser(), return_state=True,
    )
    report = state.result(raise_on_failure=False)
    if isinstance(report, list):
        for line in report:
            print(f"{line['document']:30} {line['before']} -> {line['after']} {line['error']}".rstrip())
    print(f"{state.name}: {state.message or ''}")
    return 0 if state.is_completed() else 1


def _backfill(args) -> int:
    from flows.backfill import backfill

    state = backfill(
        integration=args.target,
        since=args.since,
        until=args.until,
        document_types=args.type or None,
        chunk=args.chunk,
        force=args.force,
        dry_run=args.dry_run,
        return_state=True,
    )
    result = state.result(raise_on_failure=False)
    if isinstance(result, dict):
        for c in result["chunks"]:
            print(f"{c['integration']} {c['start']} .. {c['end']}: {c['status']}: {c['summary']}")
    print(f"{state.name}: {state.message or ''}")
    return 0 if state.is_completed() else 1


def _sync(args) -> int:
    from flows.sync import sync

    state = sync(
        integration=args.integration,
        since=args.since,
        until=args.until,
        force=args.force,
        dry_run=args.dry_run,
        document_ids=args.document or None,
        return_state=True,
    )
    print(f"{state.name}: {state.message or ''}")
    return 0 if state.is_completed() else 1


def _connect(args) -> int:
    """Authorise an OAuth2 block and save its first tokens (tasks/oauth.py); prints no token or secret."""
    from blocks.oauth import OAuth2Block
    from tasks import oauth
    from tasks.errors import RemoteError
    from tasks.registry import UnknownBlockError, load_block

    if args.ionapi:  # Infor: the block made (or updated) from its .ionapi file; nothing of the file is printed
        from blocks.infor import IonApiFileError, save_from_ionapi

        try:
            save_from_ionapi(args.block, args.ionapi)
        except IonApiFileError as exc:
            print(f"connect failed: {exc}", file=sys.stderr)
            return 2
        print(f"{args.block}: saved from {args.ionapi}")
    try:
        block = load_block(args.block)
    except UnknownBlockError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    if not isinstance(block, OAuth2Block):
        print(f"{args.block} is not an OAuth2 connection or source: nothing to connect", file=sys.stderr)
        return 2
    if args.revoke:
        try:
            oauth.revoke(block)
        except RemoteError as exc:
            print(f"revoke failed: {exc}", file=sys.stderr)
            return 1
        print(f"tokens of {block.reference()} revoked and cleared")
        return 0
    try:
        expires_at = oauth.connect(block, code=args.code, listen=not args.no_listen, timeout=args.timeout)
    except RemoteError as exc:
        print(f"connect failed: {exc}", file=sys.stderr)
        return 1
    until = expires_at.isoformat(timespec="seconds") if expires_at else "it is revoked (the server gave no expiry)"
    print(f"tokens saved to {block.reference()}, access token valid until {until}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="docroute",
        description="docroute: export approved documents to each client's destinations with Prefect. "
        "Configs live in deployments/clients/*.yaml (DOCROUTE_CONFIG_DIR). Commands that run a flow "
        "(check, sync, backfill, reconcile, status, parked) run it in this process against the Prefect "
        "server in PREFECT_API_URL, so it appears in the UI like a scheduled run.",
        epilog="""examples:
  docroute validate                                     check the configs before deploying
  docroute preview acme/invoices-to-erp ACME-INV-1001   paths and fields one document would get
  docroute deploy && docroute worker                   one deployment per integration on the docroute work pool, and a warm worker
  docroute sync acme/invoices-to-erp --document ACME-INV-1001 --force
  docroute backfill acme/invoices-to-erp --since 2026-10-01 --until 2026-10-31
  docroute status --excel status.xlsx
  docroute parked retry acme/invoices-to-erp --document ACME-INV-2001 --reason "vendor added"
  docroute reconcile acme/invoices-to-erp
  docroute connect exact-online-connection/acme         authorise an OAuth2 connection (opens a redirect listener)
Each command has its own --help; docs/operations.md has the details.""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check every client file: fields, placeholders, lookups, blocks, overlaps")
    p.add_argument("--offline", action="store_true", help="skip checking that blocks exist on the Prefect server")
    p.set_defaults(func=_validate)
    p = sub.add_parser("list", help="list integrations: connection, document types, mode, schedule")
    p.set_defaults(func=_list)
    p = sub.add_parser("preview", help="show how one document would be mapped (paths, fields), without delivering")
    p.add_argument("integration", help="client/integration, e.g. acme/invoices-to-erp")
    p.add_argument("document", help="document id in the source, e.g. ACME-INV-1001")
    p.set_defaults(func=_preview)
    p = sub.add_parser("deploy", help="create or update one Prefect deployment per integration, on a docroute work pool")
    p.add_argument("--serve", action="store_true", help="no work pool: serve them from this process until Ctrl-C (a process per run)")
    p.add_argument("--work-pool", default="docroute", help="the work pool (type docroute, created if missing; default docroute)")
    p.set_defaults(func=_deploy)
    p = sub.add_parser("worker", help="run the flow runs of a docroute work pool in this warm process until Ctrl-C")
    p.add_argument("--pool", default="docroute", help="the work pool to poll (default docroute)")
    p.add_argument("--name", help="the worker's name (a restarted worker with the same name picks up its pool)")
    p.add_argument("--threads", type=int, default=8, help="flow runs at once (default 8)")
    p.add_argument("--once", action="store_true", help="poll once, run what is due, and stop")
    p.set_defaults(func=_worker)
    p = sub.add_parser("check", help="test connections: connect, reach the folder or endpoint, write and remove a probe")
    p.add_argument("connection", nargs="*", help="connection blocks, e.g. sftp-connection/partner-a (default: all in use)")
    p.set_defaults(func=_check)
    p = sub.add_parser("sync", help="run one integration's sync now (backfill with --since/--until)")
    p.add_argument("integration", help="client/integration")
    p.add_argument("--since", type=datetime.fromisoformat, help="approval time from, e.g. 2026-10-01")
    p.add_argument("--until", type=datetime.fromisoformat, help="approval time up to, e.g. 2026-10-31T23:59")
    p.add_argument("--force", action="store_true", help="deliver again documents already delivered")
    p.add_argument("--dry-run", action="store_true", help="map and report only")
    p.add_argument("--document", action="append", help="only this document id (repeatable)")
    p.set_defaults(func=_sync)
    p = sub.add_parser("backfill", help="export a date range again in chunks, for one integration or all of a client's; resumable")
    p.add_argument("target", help="client/integration, or a client for all its enabled integrations")
    p.add_argument("--since", type=datetime.fromisoformat, help="approval time from, e.g. 2026-10-01 (default: activation)")
    p.add_argument("--until", type=datetime.fromisoformat, help="approval time up to, inclusive; a date means the whole day (default: now)")
    p.add_argument("--type", action="append", help="only this document type (repeatable), e.g. credit_note")
    p.add_argument("--chunk", default="7d", help="one sync run per chunk of this size: 6h, 1d, 7d (default 7d)")
    p.add_argument("--force", action="store_true", help="deliver again documents already delivered")
    p.add_argument("--dry-run", action="store_true", help="map and report only")
    p.set_defaults(func=_backfill)
    p = sub.add_parser("reconcile", help="compare the ledger's deliveries with what the destination holds; list differences")
    p.add_argument("integration", help="client/integration")
    p.add_argument("--prefix", help="folder to list, relative to the connection's folder (default: from the folder template)")
    p.add_argument("--hashes", action="store_true", help="also compare sha256 where the destination can tell it")
    p.add_argument("--no-source", action="store_true", help="do not map documents again from the source (presence only)")
    p.set_defaults(func=_reconcile)
    p = sub.add_parser("confirm", help="ask destinations that decide later (access points) about submitted documents")
    p.add_argument("integration", nargs="?", help="client/integration (default: every integration with submitted documents)")
    p.set_defaults(func=_confirm)
    p = sub.add_parser("notify", help="notifications of failed runs and parked documents")
    notify_sub = p.add_subparsers(dest="notify_command", required=True)
    p = notify_sub.add_parser("setup", help="create or update the Prefect automations that notify through a block")
    p.add_argument("--block", required=True, help="notification block, type-slug/name, e.g. slack-webhook/ops or custom-webhook/ops")
    p.set_defaults(func=_notify_setup)
    p = sub.add_parser("status", help="per integration: active or paused, last sync, delivered today/this week, pending, failed, parked")
    p.add_argument("--client", help="only this client's integrations")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="FILE", help="also write the table to a CSV file")
    out.add_argument("--excel", metavar="FILE", help="also write the table to an Excel file (.xlsx)")
    p.add_argument("--tz", default="UTC", help="timezone of 'today', 'this week' and the times shown (default UTC)")
    p.set_defaults(func=_status)
    p = sub.add_parser("parked", help="list, retry or discard an integration's parked (needs-attention) documents")
    p.add_argument("action", choices=["list", "retry", "discard"])
    p.add_argument("integration", help="client/integration")
    p.add_argument("--document", action="append", help="this document id (repeatable)")
    p.add_argument("--all", action="store_true", help="every parked document of the integration")
    p.add_argument("--reason", help="why (recorded in the ledger's audit trail)")
    p.add_argument("--by", help="who (recorded in the ledger's audit trail; default: your user name)")
    p.set_defaults(func=_parked)
    p = sub.add_parser("connect", help="authorise an OAuth2 connection once and save its first tokens in its block")
    p.add_argument("block", help="the OAuth2 block, type-slug/name")
    p.add_argument("--code", help="an authorization code already obtained (or the whole redirect URL); --code=CODE when it starts with a dash")
    p.add_argument("--no-listen", action="store_true", help="read the redirect URL (or code) from stdin, not from a listener")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for the redirect (default 300)")
    p.add_argument("--ionapi", metavar="FILE", help="Infor: create or update the infor-ionapi block from this .ionapi "
                   "file, then fetch its first token (nothing of the file is printed)")
    p.add_argument("--revoke", action="store_true", help="revoke the block's tokens at its revoke endpoint and clear them")
    p.set_defaults(func=_connect)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - a CLI prints the clear message, not a traceback
        from deployments.config import ConfigError

        if isinstance(exc, ConfigError):
            print(str(exc), file=sys.stderr)
            return 2
        raise
    finally:
        _send_events()


def _send_events(timeout: float = 10.0) -> None:
    """Send the Prefect events this command emitted (a block loaded, a run's states) before it exits.

    Prefect drains its events worker at interpreter exit too, but says "EventsWorker - Still
    processing items" while it does, on a command that succeeded. Draining here, with that progress
    message held back, sends the same events without the noise."""
    import logging

    from prefect.events.worker import EventsWorker

    progress = logging.getLogger("EventsWorker")
    level = progress.level
    progress.setLevel(logging.ERROR)
    try:
        EventsWorker.drain_all(timeout=timeout)
    finally:
        progress.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
