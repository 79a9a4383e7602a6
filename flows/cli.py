"""`docroute`: the command line. Thin wrappers over the config, the flows and the deployments."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime


def _validate(args) -> int:
    from deployments.config import load_config

    config = load_config(check_blocks=not args.offline)
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
    from tasks.mapping import Lookups, MappingError, preview
    from tasks.sources.inbox import SourceProblem

    config = load_config(only=args.integration)
    integ = config.get(args.integration)
    source = config.block(integ.source).source()
    found = source.candidate(args.document, integ.client)
    if found is None:
        print(f"document {args.document} is not in {source.label} for client {integ.client}", file=sys.stderr)
        return 1
    doc = found if isinstance(found, SourceProblem) else source.document(found)
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

    deploy_main([] if args.serve else ["--no-serve"])
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="docroute",
        description="docroute: export approved documents to each client's destinations with Prefect. "
        "Configs live in deployments/clients/*.yaml (DOCROUTE_CONFIG_DIR).",
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
    p = sub.add_parser("deploy", help="create or update one Prefect deployment per integration")
    p.add_argument("--serve", action="store_true", help="then serve them from this process until Ctrl-C")
    p.set_defaults(func=_deploy)
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
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - a CLI prints the clear message, not a traceback
        from deployments.config import ConfigError

        if isinstance(exc, ConfigError):
            print(str(exc), file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
