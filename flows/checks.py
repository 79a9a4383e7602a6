"""The connection-check flow: run every connection's and source's check, like Docbits' and Banqup's "test connection".

    docroute check                      # every connection and source the integrations use
    docroute check sftp-connection/x    # one (a source block too: sftp-inbox/capture)
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from deployments.config import load_config
from tasks.connectors.base import Mode
from tasks import registry
from tasks.errors import RemoteError
from tasks.registry import UnknownBlockError, load_block


class ConnectionCheckFailed(Exception):
    """Raised at the end of a check run in which a connection failed; names them."""


def check_one(ref: str, mode: Mode = Mode.PRODUCTION) -> dict[str, Any]:
    """Check one connection or source block; never raises: the outcome is a row."""
    row = {"connection": ref, "mode": mode.value, "ok": False, "message": ""}
    try:
        block = load_block(ref)
        is_source = block.get_block_type_slug() in registry.source_types()
        endpoint = block.source() if is_source else block.connector(mode)
        with endpoint:
            result = endpoint.check()
        row.update(ok=result.ok, message=result.message, mode="source" if is_source else mode.value)
    except (UnknownBlockError, RemoteError, LookupError) as exc:
        row["message"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - one broken connection never hides the others
        row["message"] = f"unexpected {type(exc).__name__}: {exc}"
    if not row["message"].startswith(ref):  # the block an ops user must edit, first
        row["message"] = f"{ref}: {row['message']}"
    return row


@flow(name="docroute-check-connections", log_prints=False)
def check_connections(connections: list[str] | None = None) -> list[dict[str, Any]]:
    """Check connections (default: every one the integrations use, in each mode they use).

    The table artifact `connection-checks` keeps the history on the Artifacts page.
    """
    logger = get_run_logger()
    if connections:
        targets = {(ref, Mode.PRODUCTION) for ref in connections}
    else:
        config = load_config(check_blocks=False)
        targets = {
            (i.connection, Mode(i.mode) if i.mode in ("production", "test", "certification") else Mode.PRODUCTION)
            for i in config.integrations.values()
        } | {(i.source, Mode.PRODUCTION) for i in config.integrations.values()}
    rows = [check_one(ref, mode) for ref, mode in sorted(targets)]
    for row in rows:
        (logger.info if row["ok"] else logger.warning)("%s (%s): %s", row["connection"], row["mode"], row["message"])
    create_table_artifact(key="connection-checks", table=rows, description="Connection checks")
    failed = [r for r in rows if not r["ok"]]
    if failed:
        raise ConnectionCheckFailed(
            f"{len(failed)} of {len(rows)} connections failed: " + "; ".join(r["message"] for r in failed)
        )
    return rows
