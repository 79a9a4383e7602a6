"""The connection-check flow: run every connection's check, like Docbits' and Banqup's "test connection".

    docroute check                      # every connection the integrations use
    docroute check sftp-connection/x    # one
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from blocks.base import UnknownBlockError, load_block
from deployments.config import load_config
from tasks.connectors.base import DeliveryError, Mode


class ConnectionCheckFailed(Exception):
    """Raised at the end of a check run in which a connection failed; names them."""


def check_one(ref: str, mode: Mode = Mode.PRODUCTION) -> dict[str, Any]:
    """Check one connection block; never raises: the outcome is a row."""
    row = {"connection": ref, "mode": mode.value, "ok": False, "message": ""}
    try:
        connector = load_block(ref).connector(mode)
        with connector:
            result = connector.check()
        row.update(ok=result.ok, message=result.message)
    except (UnknownBlockError, DeliveryError, LookupError) as exc:
        row["message"] = str(exc)
    except Exception as exc:  # noqa: BLE001 - one broken connection never hides the others
        row["message"] = f"{ref}: unexpected {type(exc).__name__}: {exc}"
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
        }
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
