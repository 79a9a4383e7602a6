"""What an analyst sees of a failed sync run, in the Prefect UI, in a real browser (Debian's Chromium).

The run page says Failed with a message naming the document, its logs hold a warning per failed
document and no Python traceback (a document failure is not a crash), and the run's table
artifact shows status and error right after the document, failed rows first, without scrolling.
"""

from __future__ import annotations

import re

from flows.sync import sync
from tasks.sources.seed import write_document
from tests.browser import browser_page
from tests.conftest import utc

WIDTH = 1400  # a laptop's browser window


def test_the_failed_run_page_and_its_table_artifact(workspace, prefect_ui):
    key = workspace.integration(
        mapping={"folder": "{client}/{doc_type}/{approved_at:%Y/%m}/a-rather-long-folder-template-as-clients-like-them",
                 "filename": "{supplier}_{number}_{doc_id}.{ext}"},
    )
    for i in range(1, 4):
        write_document(workspace.inbox, f"UI-GOOD-{i}", client="acme", approved_at=utc(2026, 3, i, 9),
                       metadata={"number": f"INV-{i}", "supplier": "Globex Industrial BV"})
    write_document(workspace.inbox, "UI-BAD-1", client="acme", approved_at=utc(2026, 3, 5, 9),
                   metadata={"number": "INV-9", "supplier": "Globex Industrial BV"})
    (workspace.inbox / "UI-BAD-1.pdf").unlink()  # metadata without its PDF
    state = sync(integration=key, return_state=True)
    assert state.is_failed()
    run_id = state.state_details.flow_run_id

    with browser_page(width=WIDTH) as page:
        page.goto(f"{prefect_ui}/runs/flow-run/{run_id}")
        page.get_by_text("Failed", exact=True).first.wait_for(timeout=30_000)
        logs = page.locator("body")
        page.get_by_text("UI-BAD-1.pdf is missing").first.wait_for(timeout=30_000)  # the warning, in the Logs tab
        text = logs.inner_text()
        assert "1 of 4 documents failed: UI-BAD-1" in text  # the state message names the document
        assert "Traceback" not in text and "Encountered exception" not in text

        page.get_by_text("Artifacts", exact=True).first.click()
        page.get_by_text(f"sync-{workspace_slug(key)}").last.click()
        table = page.locator("table").first
        table.wait_for(timeout=30_000)
        headers = [h.strip() for h in table.locator("th").all_inner_texts()]
        assert headers[:3] == ["document", "status", "error"], headers
        assert headers.index("remote path") > headers.index("error")
        rows = table.locator("tbody tr")
        assert rows.count() == 4
        first = [c.strip() for c in rows.nth(0).locator("td").all_inner_texts()]
        assert first[:2] == ["UI-BAD-1", "failed"] and "UI-BAD-1.pdf is missing" in first[2]  # failed rows first
        assert all(rows.nth(i).locator("td").nth(1).inner_text().strip() == "delivered" for i in range(1, 4))
        # status and error are on screen without scrolling sideways, however long the remote paths
        for cell in (rows.nth(0).locator("td").nth(1), rows.nth(0).locator("td").nth(2)):
            box = cell.bounding_box()
            assert box is not None and box["x"] + min(box["width"], 200) <= WIDTH, box


def workspace_slug(key: str) -> str:
    return re.sub(r"/", "-", key)
