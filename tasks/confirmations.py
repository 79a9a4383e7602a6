"""What destinations that confirm later said, per integration, for `docroute status`: what the documents
waiting for confirmation wait for (the access point still processing them, a person's interaction at
the access point, the buyer's response), and the buyer responses recorded (RecipientAccept,
RecipientReject). Read from the ledger's `detail` of each version (the connector's own record of the
delivery: tasks/connectors/access_point.py writes `state` and `buyer_response`), in one query.
"""

from __future__ import annotations

import json
from collections import Counter

import sqlalchemy as sa

from tasks import ledger as L

WAITING_FOR = {"Processing": "processing", "AwaitingInteraction": "awaiting interaction", "Processed": "processed",
               "awaiting-buyer": "buyer response"}
RESPONSES = {"RecipientAccept": "accepted", "RecipientReject": "rejected"}


def summary(ledger: L.Ledger, integrations: list[str]) -> dict[str, dict[str, str]]:
    """Per integration: "waiting for" ("2 processing, 1 awaiting interaction") and "buyer responses"
    ("3 accepted, 1 rejected"), empty strings when there is nothing to say."""
    out = {key: {"waiting for": "", "buyer responses": ""} for key in integrations}
    docs = L.documents
    waiting: dict[str, Counter] = {}
    responses: dict[str, Counter] = {}
    with ledger.engine.connect() as conn:
        for i in range(0, len(integrations), 500):
            chunk = integrations[i : i + 500]
            rows = conn.execute(
                sa.select(docs.c.integration, docs.c.status, docs.c.detail).where(
                    docs.c.integration.in_(chunk), docs.c.detail.is_not(None),
                    sa.or_(docs.c.status == L.SUBMITTED, docs.c.detail.like('%"buyer_response"%')))
            )
            for integ, status, text in rows:
                try:
                    detail = json.loads(text)
                except ValueError:
                    continue
                if not isinstance(detail, dict):
                    continue
                if status == L.SUBMITTED:
                    waiting.setdefault(integ, Counter())[WAITING_FOR.get(detail.get("state"), "the destination")] += 1
                kind = RESPONSES.get(detail.get("buyer_response"))
                if kind:
                    responses.setdefault(integ, Counter())[kind] += 1
    for integ, counts in waiting.items():
        out[integ]["waiting for"] = ", ".join(f"{n} {what}" for what, n in sorted(counts.items()))
    for integ, counts in responses.items():
        out[integ]["buyer responses"] = ", ".join(f"{counts[k]} {k}" for k in ("accepted", "rejected") if counts[k])
    return out
