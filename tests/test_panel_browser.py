"""End to end: the real FiftyOne App server + Debian's Chromium drive the Label review panel.

Opens the panel from the App's "+" menu, sorts by the swap score, filters to swap suspects
under a threshold, accepts the top label,
checks the database, undoes from the panel, checks again, saves the review views, opens a
row's sample in the modal, and keeps a screenshot (``<tmp_path>/panel.png``, copied to ``tests/_output/panel.png``; to
``docs/panel.png`` when ``LABEL_GRADER_UPDATE_DOCS=1``).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader import review
from grader.scores import REVIEWED_OK_TAG

from review_helpers import add_fake_cleanlab, add_jittered_predictions

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THRESHOLD = 0.3
QUEUE_ROWS = 15  # rows the panel shows (panels/review.py)
STEP_MS = 45_000  # generous per-step timeout; the whole test stays well under 3 minutes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(name: str, port: int) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([sys.executable, str(HERE / "panel_app_server.py"), name, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ))
    lines: list[str] = []
    ready = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("READY"):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(120):
        proc.kill()
        raise AssertionError("the FiftyOne App server did not start in 120 s; its output:\n"
                             + "\n".join(lines[-40:]))
    return proc, lines


def _wait_db(pred, what: str, timeout: float = 45.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for the database: {what}")


def _open_panel_menu(page, tries: int = 4) -> None:
    """Click the App's "+" (new panel) button, first dismissing the promo popover that the
    App may show over it a moment after loading."""
    for attempt in range(tries):
        time.sleep(1.5)
        dismiss = page.get_by_text("Dismiss", exact=True)
        if dismiss.count() and dismiss.first.is_visible():
            dismiss.first.click()
        page.keyboard.press("Escape")
        try:
            page.click('[data-cy="new-panel-btn"]', timeout=8_000)
            page.get_by_text("Label review", exact=True).first.wait_for(timeout=8_000)
            return
        except Exception:
            if attempt == tries - 1:
                raise AssertionError("could not open the App's new-panel menu, or it does not "
                                     "list 'Label review' (is the plugin on FIFTYONE_PLUGINS_DIR?)")


def _tags(ds, sid, lid):
    s = ds[sid]
    s.reload()
    return {d.id: list(d.tags or []) for d in s.ground_truth.detections}[lid]


@pytest.fixture()
def review_dataset(request):
    """16 real coco128 images (for a screenshot worth showing), else the synthetic dataset;
    with jittered predictions and cleanlab-like scores. Persistent: the App runs elsewhere."""
    try:
        base = request.getfixturevalue("coco128_base")
        ds = base.limit(16).clone()
        add_jittered_predictions(ds)
    except pytest.skip.Exception:
        ds = request.getfixturevalue("synthetic_dataset")
    ds.persistent = True
    add_fake_cleanlab(ds)
    yield ds
    review.clear_fix_log(ds)
    if not ds.deleted:
        ds.delete()


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="needs Debian's chromium (scripts/setup.sh installs it; CI fails without it)")
def test_panel_filter_fix_undo_in_browser(review_dataset, tmp_path):
    from playwright.sync_api import sync_playwright

    ds = review_dataset
    expected = review.review_queue(ds, score="cleanlab_swap", issues=["suspect:swap"],
                                   threshold=THRESHOLD)
    assert len(expected) >= 2, "fixture should have swap suspects"
    rows = min(len(expected), QUEUE_ROWS)
    rows_after = min(len(expected) - 1, QUEUE_ROWS)
    top = expected[0]
    assert REVIEWED_OK_TAG not in _tags(ds, top.sample_id, top.label_id)

    port = _free_port()
    proc, server_log = _start_app(ds.name, port)
    shot = tmp_path / "panel.png"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1920, "height": 1080})
            page.set_default_timeout(STEP_MS)
            try:
                page.goto(f"http://127.0.0.1:{port}/datasets/{ds.name}", timeout=STEP_MS)
                page.wait_for_selector('[data-cy="new-panel-btn"]')
                _open_panel_menu(page)
                page.get_by_text("Label review", exact=True).first.click()
                page.get_by_text("Queue (", exact=False).first.wait_for()

                # sort by the swap score, filter to swap suspects at or below the threshold
                page.get_by_text("cleanlab_badloc", exact=True).first.click()
                page.get_by_role("option", name="cleanlab_swap").click()
                page.get_by_text("any suspect", exact=True).first.click()
                page.get_by_role("option", name="suspect:swap").click()
                page.locator('input[type="number"]').last.fill(str(THRESHOLD))
                page.get_by_text(f"Queue ({rows} shown", exact=False).first.wait_for()
                page.get_by_text(f"{top.value:.3f}", exact=True).first.wait_for()

                # fix: accept the most suspect swap
                page.get_by_role("button", name="Accept", exact=True).first.click()
                _wait_db(lambda: REVIEWED_OK_TAG in _tags(ds, top.sample_id, top.label_id),
                         "top swap suspect tagged reviewed:ok")
                log = review.fix_log(ds, limit=1)
                assert log[0].kind == "accept" and log[0].label_id == top.label_id
                page.get_by_text(f"Queue ({rows_after} shown", exact=False).first.wait_for()
                page.get_by_text("Recent fixes", exact=False).first.wait_for()
                page.screenshot(path=str(shot))

                # undo from the panel
                page.get_by_role("button", name="Undo last fix", exact=True).click()
                _wait_db(lambda: REVIEWED_OK_TAG not in _tags(ds, top.sample_id, top.label_id),
                         "accept undone (reviewed:ok removed)")
                assert review.fix_log(ds, limit=1)[0].undone

                # saved views, one click
                page.get_by_role("button", name="Save review views", exact=True).click()
                _wait_db(lambda: ds.reload() or {"suspect swap", "reviewed"} <= set(ds.list_saved_views()),
                         "review views saved on the dataset")

                # a row's "Open" takes the App to that sample, label selected, in the modal
                page.get_by_role("button", name="Open", exact=True).first.click()
                page.get_by_text("Annotate", exact=True).first.wait_for()
                page.get_by_text(ds[expected[0].sample_id].filepath, exact=True).first.wait_for()
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))
                raise
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert shot.stat().st_size > 10_000
    # Kept beside the tests (git-ignored) for CI; the README's copy changes only on request.
    out = REPO / "tests" / "_output"
    out.mkdir(exist_ok=True)
    shutil.copy(shot, out / "panel.png")
    if os.environ.get("LABEL_GRADER_UPDATE_DOCS") == "1":
        shutil.copy(shot, REPO / "docs" / "panel.png")
