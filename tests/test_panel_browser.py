"""End to end: the real FiftyOne App server + Debian's Chromium drive the Label review panel.

A whole review session by keyboard (``LABEL_GRADER_REVIEW_N`` decisions of each kind, 10 by
default, 20 for the issue's full session): open the panel from the App's "+" menu, enter review mode,
and decide ``N_EACH`` labels of each kind — accept (a), relabel to the first offered class (1),
use the suggested box (b), delete (d), adopt an overlooked candidate (c) — and undo (u)
``N_EACH`` of them, each checked in the database right after the next item shows. Then a
page-through, saving the review views, and a row's "Open" into the modal. Timings (panel
open, next item after a fix, review step without a fix, modal open) are printed and written
to ``tests/_output/panel_timings.json``; screenshots go to ``tests/_output/`` (the docs'
screenshots come from ``tests/panel_screenshots.py``, on a real judge run).

Issue 23's checks: each class choice in review mode changes exactly one label in the database
(``LABEL_GRADER_DROPDOWN_N``, 20; the issue's 50 passed), new class names, a sidebar filter
through 11 panel actions, the default and remembered sort, the overlooked filter, suggestions
only where a judge disagrees and delete hints, box editing with undo, the layout at
1440x900, a "Grade labels" run from the App (step progress, the panel re-read when it ends)
and the learning queue re-ordered after 25 decisions by key.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader import review
from grader.scores import REVIEWED_OK_TAG

from review_helpers import add_fake_cleanlab, add_fake_ensemble, add_jittered_predictions

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Decisions of each kind; the review-UX issue's full session is LABEL_GRADER_REVIEW_N=20
# (about 6 min on 2 busy cores); CI runs 10.
N_EACH = int(os.environ.get("LABEL_GRADER_REVIEW_N", "10"))
STEP_MS = 45_000  # generous per-step timeout
NEXT_ITEM_TARGET_MS = 300
SETTLE_S = 0.3


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


def _open_panel_menu(page, tries: int = 4) -> None:
    """Click the App's "+" (new panel) button, first dismissing the promo popover that the
    App may show over it a moment after loading."""
    for attempt in range(tries):
        time.sleep(1.0)
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


def _label(ds, sid, lid, field="ground_truth"):
    s = ds[sid]
    s.reload()
    dets = s[field].detections if s[field] else []
    return {d.id: d for d in dets}.get(lid)


POS_RE = re.compile(r"Label (\d+) of (\d+).*?`?([0-9a-f]{24})`?")


class Review:
    """Keyboard driver for the panel's review mode, timing each step."""

    def __init__(self, page):
        self.page = page
        self.keys = page.locator("[data-label-grader-keys]").first  # panels/js/review_keys.js
        self.pos = page.get_by_text(re.compile(r"^Label \d+ of \d+")).first.locator("xpath=..")

    def current(self) -> tuple[int, str]:
        m = POS_RE.search(self.pos.inner_text())
        assert m, self.pos.inner_text()
        return int(m.group(1)), m.group(3)

    def press(self, ch: str, old: str | None = None) -> tuple[float, int, str]:
        """Press one key (focus outside any text input, as a curator would after a click on
        the picture); wait until another label than ``old`` (default: the one shown) is shown;
        return (ms until then, rank, label id once the panel has settled for ``SETTLE_S``).
        """
        if old is None:
            _, old = self.current()
        self.keys.wait_for()
        self.page.evaluate("() => document.activeElement && document.activeElement.blur()")
        t = time.perf_counter()
        self.page.keyboard.press(ch)
        self.page.wait_for_function(
            "([old]) => { const e = [...document.querySelectorAll('p')].find("
            "x => /^Label \\d+ of \\d+/.test(x.innerText || ''));"
            " return e && /[0-9a-f]{24}/.test(e.innerText) && !e.innerText.includes(old); }",
            arg=[old], timeout=STEP_MS, polling=10)
        ms = (time.perf_counter() - t) * 1e3
        time.sleep(SETTLE_S)
        rank, lid = self.current()
        return ms, rank, lid

    def wait_for(self, lid: str, timeout_ms: int = 10_000) -> str:
        """Wait until label ``lid`` is the one shown (or time out); return the label shown."""
        try:
            self.page.wait_for_function(
                "([lid]) => { const e = [...document.querySelectorAll('p')].find("
                "x => /^Label \\d+ of \\d+/.test(x.innerText || ''));"
                " return e && e.innerText.includes(lid); }",
                arg=[lid], timeout=timeout_ms, polling=50)
        except Exception:  # noqa: BLE001 - the assertion after this reports what is shown
            pass
        return self.current()[1]


@pytest.fixture()
def review_dataset(request):
    """32 real coco128 images with jittered predictions and cleanlab-like scores (persistent:
    the App runs in another process)."""
    yield from _scored_clone(request.getfixturevalue("coco128_base"), 32)


def _scored_clone(base, n: int):
    """The first ``n`` images of ``base``, persistent, with jittered predictions and
    cleanlab-like scores; deleted (with their fix log) after the test."""
    ds = base.limit(n).clone()
    add_jittered_predictions(ds)
    ds.persistent = True
    add_fake_cleanlab(ds)
    yield ds
    review.clear_fix_log(ds)
    if not ds.deleted:
        ds.delete()


def _panel(page):
    """The Label review panel's part of the page (the App's sidebar has field names too)."""
    return page.locator('[data-cy="panel-content-label_review"]').last


def _wait_selected(page, name: str, text: str) -> None:
    """Wait until the panel's ``name`` select shows ``text``."""
    page.wait_for_function(
        "([n, t]) => { const e = document.querySelector("
        "`[data-label-grader-control='${n}'] select`);"
        " return e && e.selectedIndex >= 0 && e.options[e.selectedIndex].text === t; }",
        arg=[name, text], timeout=STEP_MS)


def _choose(page, current_text: str, option: str) -> None:
    """In the panel's select showing ``current_text``, choose ``option``."""
    sel = _panel(page).locator("select").filter(
        has=page.locator("option:checked", has_text=current_text))
    sel.first.wait_for()
    sel.first.select_option(label=option)


NEEDS_CHROMIUM = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium (scripts/setup.sh installs it; CI fails without it)")


@contextlib.contextmanager
def app_page(ds, name: str, viewport=(1920, 1200), timings: dict | None = None):
    """The App served on ``ds`` in Chromium, the Label review panel open; yields the page.

    ``timings["panel_open"]`` gets the ms from the menu click to the panel's first queue
    preview. On an exception the page is saved to ``tests/_output/<name>_failure.png`` and the
    App server's last lines are printed."""
    from playwright.sync_api import sync_playwright

    out = REPO / "tests" / "_output"
    out.mkdir(exist_ok=True)
    port = _free_port()
    proc, server_log = _start_app(ds.name, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.set_default_timeout(STEP_MS)
            try:
                page.goto(f"http://127.0.0.1:{port}/datasets/{ds.name}", timeout=STEP_MS)
                page.wait_for_selector('[data-cy="new-panel-btn"]')
                _open_panel_menu(page)
                t = time.perf_counter()
                page.get_by_text("Label review", exact=True).first.click()
                try:
                    page.get_by_text("Queue: ", exact=False).first.wait_for(timeout=20_000)
                except Exception:  # noqa: BLE001 - retried once, below
                    # once under load (6 tests in a row) the menu click opened no panel at
                    # all: open it again; a panel that is only slow is waited for
                    if not page.locator('[data-cy="panel-tab-label_review"]').count():
                        _open_panel_menu(page)
                        page.get_by_text("Label review", exact=True).first.click()
                    page.get_by_text("Queue: ", exact=False).first.wait_for()
                if timings is not None:
                    page.locator("img[src^='data:image/jpeg']").first.wait_for()
                    timings.setdefault("panel_open", []).append((time.perf_counter() - t) * 1e3)
                yield page
            except BaseException:
                page.screenshot(path=str(out / f"{name}_failure.png"))
                print("\n".join(server_log[-60:]))
                raise
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def gt_snapshot(ds, field: str = "ground_truth") -> dict[str, tuple]:
    """Every label of ``field`` as stored: id -> (class, box, tags)."""
    ids, labels, boxes, tags = ds.values([f"{field}.detections.id", f"{field}.detections.label",
                                          f"{field}.detections.bounding_box",
                                          f"{field}.detections.tags"])
    return {i: (l, tuple(b or ()), tuple(t or ()))
            for ii, ll, bb, tt in zip(ids, labels, boxes, tags)
            for i, l, b, t in zip(ii or [], ll or [], bb or [], tt or [])}


def changed(before: dict, after: dict) -> dict[str, tuple]:
    """Labels that differ between two :func:`gt_snapshot` results (None: deleted/added)."""
    return {k: (before.get(k), after.get(k)) for k in set(before) | set(after)
            if before.get(k) != after.get(k)}


@pytest.mark.skipif(not Path(CHROMIUM).exists() and not os.environ.get("CI"),
                    reason="needs Debian's chromium (scripts/setup.sh installs it; CI fails without it)")
def test_review_session_by_keyboard(review_dataset, tmp_path):
    ds = review_dataset
    n_labels = ds.count("ground_truth.detections")
    assert n_labels >= 5 * N_EACH, "fixture should have enough labels"
    timings: dict[str, list[float]] = {"panel_open": [], "next_after_fix": [], "step": [],
                                       "undo": [], "modal_open": [], "page": []}
    out = REPO / "tests" / "_output"
    with app_page(ds, "keyboard", timings=timings) as page:
        # every scored label, in pages of 12: page through, then back
        _choose(page, "any suspect", "all scored labels")
        page.get_by_text(f"of {n_labels}**", exact=False).count()
        page.get_by_text(re.compile(rf"Queue: 1–12 of {n_labels}")).first.wait_for()
        t = time.perf_counter()
        page.get_by_role("button", name="Page ▶").click()
        page.get_by_text(re.compile(rf"Queue: 13–24 of {n_labels}")).first.wait_for()
        timings["page"].append((time.perf_counter() - t) * 1e3)
        page.get_by_role("button", name="◀ Page").click()
        page.get_by_text(re.compile(rf"Queue: 1–12 of {n_labels}")).first.wait_for()
        page.screenshot(path=str(out / "panel.png"))

        page.get_by_role("button", name="Review mode (keyboard)").click()
        r = Review(page)
        r.pos.wait_for()
        page.locator("img[src^='data:image/jpeg']").first.wait_for()
        page.screenshot(path=str(out / "review_mode.png"))
        counts = {k: 0 for k in ("accept", "relabel", "replace_box", "delete", "undo")}
        sample_of = {l: sid for sid, ls in zip(*ds.values(["id", "ground_truth.detections.id"]))
                     for l in ls}
        rank, lid = r.current()
        assert rank == 1
        for i, key in enumerate(["a", "1", "b", "d"] * N_EACH):
            sid = sample_of[lid]
            before = _label(ds, sid, lid)
            ms, rank2, lid2 = r.press(key, lid)
            timings["next_after_fix"].append(ms)
            assert lid2 != lid, "the next item should show after a fix"
            after = _label(ds, sid, lid)
            if key == "a":
                assert REVIEWED_OK_TAG in after.tags
                counts["accept"] += 1
            elif key == "1":
                assert after.label != before.label and "reviewed:fixed" in after.tags
                counts["relabel"] += 1
            elif key == "b":
                assert after.bounding_box != before.bounding_box
                counts["replace_box"] += 1
            else:
                assert after is None
                counts["delete"] += 1
                # undo the delete: the label is back and the panel shows it again
                ms, _, lid_u = r.press("u", lid2)
                timings["undo"].append(ms)
                if lid_u != lid:  # the App's delayed state write may still be in flight
                    lid_u = r.wait_for(lid)
                restored = _label(ds, sid, lid)
                assert lid_u == lid and restored is not None
                assert restored.bounding_box == pytest.approx(before.bounding_box)
                counts["undo"] += 1
                ms, rank2, lid2 = r.press("n", lid_u)  # a review step without a decision
                timings["step"].append(ms)
            rank, lid = rank2, lid2
        log = review.fix_log(ds, limit=10 * N_EACH, include_undone=True)
        kinds = [x.kind for x in log if not x.undone]
        assert kinds.count("accept") == counts["accept"] == N_EACH
        assert kinds.count("relabel") == counts["relabel"] == N_EACH
        assert kinds.count("replace_box") == counts["replace_box"] == N_EACH
        assert kinds.count("delete") == 0 and counts["delete"] == N_EACH
        assert sum(x.undone for x in log) == counts["undo"] == N_EACH
        for _ in range(3):
            ms, _, _ = r.press("p")
            timings["step"].append(ms)

        # adopt N_EACH overlooked candidates, by key
        page.get_by_role("button", name="◀ Back to the list").click()
        _choose(page, "cleanlab_badloc", "cleanlab_overlooked")
        # as a curator would: the candidates' list shows, then review mode
        page.get_by_role("button", name="Adopt", exact=True).first.wait_for()
        page.get_by_role("button", name="Review mode (keyboard)").click()
        r = Review(page)
        r.pos.wait_for()
        adopted = 0
        _, cid = r.current()
        for _ in range(N_EACH):
            ms, _, cid2 = r.press("c", cid)
            timings["next_after_fix"].append(ms)
            assert cid2 != cid
            cid = cid2
            adopted += 1
        n_adopt = sum(1 for x in review.fix_log(ds, limit=10 * N_EACH) if x.kind == "adopt")
        assert n_adopt == adopted == N_EACH
        assert ds.count("ground_truth.detections") > 0

        # back to the list: save the views, open a row's sample in the modal
        page.get_by_role("button", name="◀ Back to the list").click()
        page.get_by_role("button", name="Save review views", exact=True).click()
        deadline = time.time() + 30
        while time.time() < deadline and "ground_truth suspect badloc" not in ds.list_saved_views():
            time.sleep(0.3)
            ds.reload()
        assert "ground_truth suspect badloc" in ds.list_saved_views()
        _choose(page, "cleanlab_overlooked", "cleanlab_badloc")
        page.get_by_text(re.compile(r"Queue: 1–")).first.wait_for()
        t = time.perf_counter()
        page.get_by_role("button", name="Open", exact=True).first.click()
        page.get_by_text("Annotate", exact=True).first.wait_for()
        timings["modal_open"].append((time.perf_counter() - t) * 1e3)

    summary = {k: {"n": len(v), "median_ms": round(statistics.median(v), 1),
                   "p90_ms": round(sorted(v)[int(0.9 * (len(v) - 1))], 1),
                   "max_ms": round(max(v), 1)} for k, v in timings.items() if v}
    (out / "panel_timings.json").write_text(json.dumps(summary, indent=1))
    print("\nreview session timings (ms):")
    for k, v in summary.items():
        print(f"  {k:16s} n={v['n']:3d} median={v['median_ms']:8.1f} p90={v['p90_ms']:8.1f} "
              f"max={v['max_ms']:8.1f}")
    # the target is NEXT_ITEM_TARGET_MS at the median (met on this machine: docs/review.md);
    # CI asserts twice that, a guard against a regression like the per-key grid re-read (689
    # ms) without failing on a loaded runner
    assert summary["next_after_fix"]["median_ms"] <= 2 * NEXT_ITEM_TARGET_MS, summary


# Class choices in the relabel test: CI 20; the issue's full check is LABEL_GRADER_DROPDOWN_N=50
# (131 s on 2 busy cores).
N_PICKS = int(os.environ.get("LABEL_GRADER_DROPDOWN_N", "20"))
PICK_SETTLE_S = 0.6  # the issue saw the stray second relabel ~120 ms after the choice


def _relabel_dropdown(page):
    """The review mode's "Relabel to" class picker."""
    picker = page.locator("[data-label-grader-relabel] input")
    if picker.count():
        return picker.first
    return page.locator("[role='combobox']").last  # the App's own dropdown (before issue 23)


def _wait_moved_on(page, old: str) -> None:
    """Wait until review mode shows another label than ``old``."""
    page.wait_for_function(
        "([old]) => { const e = [...document.querySelectorAll('p')].find("
        "x => /^Label \\d+ of \\d+/.test(x.innerText || ''));"
        " return e && /[0-9a-f]{24}/.test(e.innerText) && !e.innerText.includes(old); }",
        arg=[old], timeout=STEP_MS, polling=10)


@NEEDS_CHROMIUM
def test_relabel_dropdown_changes_exactly_one_label(review_dataset):
    """Issue 23.1: each class chosen in review mode's "Relabel to" picker relabels the label
    shown and nothing else (the database is compared before and after every choice)."""
    ds = review_dataset
    queue = review.review_queue(ds, score="cleanlab_badloc", suspects_only=False, limit=8)
    spurious = {it.label_id for it in queue[1::3]}  # a box grader verdict "no object here"
    ds.set_label_values("ground_truth.detections.boxgrader_p_background",
                        [{"sample_id": it.sample_id, "label_id": it.label_id, "value": 0.97}
                         for it in queue if it.label_id in spurious])
    queue = review.review_queue(ds, score="cleanlab_badloc", suspects_only=False, limit=8)
    with app_page(ds, "dropdown") as page:
        _choose(page, "any suspect", "all scored labels")
        page.get_by_role("button", name="Review mode (keyboard)").click()
        r = Review(page)
        r.pos.wait_for()
        # issue 23.5: a one-key relabel only where a judge disagrees; delete where spurious
        assert any(it.class_hints for it in queue) and not all(it.class_hints for it in queue)
        for it in queue:
            page.wait_for_function("([lid]) => document.body.innerText.includes(lid)",
                                   arg=[it.label_id])
            time.sleep(0.3)
            swap = _panel(page).get_by_role("button", name=re.compile(r"^Relabel .* \[s\]$"))
            assert swap.count() == (1 if it.class_hints else 0), (it.label, it.class_hints)
            if it.class_hints:
                assert swap.inner_text() == f"Relabel {it.class_hints[0]} [s]"
            hint = _panel(page).get_by_role("button", name="Delete [d] — likely no object")
            assert hint.count() == (1 if it.label_id in spurious else 0)
            r.press("n", it.label_id)
        for _ in queue:
            r.press("p")
        total_changes = 0
        for i in range(N_PICKS):
            _, lid = r.current()
            before = gt_snapshot(ds)
            old_class = before[lid][0]
            box = _relabel_dropdown(page)
            box.click()
            options = page.get_by_role("option")
            options.first.wait_for()
            option = options.nth(i % 3)
            new_class = option.inner_text().strip()
            option.click()
            _wait_moved_on(page, lid)
            time.sleep(PICK_SETTLE_S)
            diff = changed(before, gt_snapshot(ds))
            assert set(diff) == {lid}, (
                f"choice {i + 1}: {old_class} -> {new_class} on {lid} changed {diff}")
            assert diff[lid][1][0] == new_class != old_class
            total_changes += len(diff)
        time.sleep(1.0)  # a late stray event would still show here
        log = [x for x in review.fix_log(ds, limit=4 * N_PICKS) if x.kind == "relabel"]
        assert len(log) == total_changes == N_PICKS

        # searchable: type part of a name, Enter takes the first match
        _, lid = r.current()
        before = gt_snapshot(ds)
        target = "toothbrush" if before[lid][0] != "toothbrush" else "umbrella"
        box = _relabel_dropdown(page)
        box.click()
        box.type(target[:6])
        page.get_by_role("option", name=target, exact=True).wait_for()
        box.press("Enter")
        _wait_moved_on(page, lid)
        time.sleep(PICK_SETTLE_S)
        diff = changed(before, gt_snapshot(ds))
        assert set(diff) == {lid} and diff[lid][1][0] == target

        # issue 23.2: a new class name: Enter does not make it (a typo stays a typo), the
        # picker's explicit "Relabel to new class" choice does
        _, lid = r.current()
        before = gt_snapshot(ds)
        box = _relabel_dropdown(page)
        box.click()
        box.type("zebra crossing")
        new_opt = page.locator("[data-new-class]")
        new_opt.wait_for()
        box.press("Enter")
        time.sleep(PICK_SETTLE_S)
        assert not changed(before, gt_snapshot(ds)) and r.current()[1] == lid
        new_opt.dispatch_event("mousedown")
        _wait_moved_on(page, lid)
        time.sleep(PICK_SETTLE_S)
        diff = changed(before, gt_snapshot(ds))
        assert set(diff) == {lid} and diff[lid][1][0] == "zebra crossing"


@NEEDS_CHROMIUM
def test_box_nudge_and_layout_at_1440x900(review_dataset):
    """Issue 23.6/23.7: at 1440x900 the list's buttons and "Review mode" are on screen; in
    review mode the arrow keys edit the box shown, 'e' saves exactly that box, 'u' undoes."""
    ds = review_dataset
    with app_page(ds, "nudge", viewport=(1440, 900)) as page:
        out = REPO / "tests" / "_output"
        page.locator("img[src^='data:image/jpeg']").first.wait_for()
        for name in ("Review mode (keyboard)", "Accept"):
            b = page.get_by_role("button", name=name, exact=True).first.bounding_box()
            assert b and b["x"] >= 0 and b["x"] + b["width"] <= 1440 and b["y"] + b["height"] <= 900, (
                name, b)
        for name in ("Delete", "Open"):  # a row's last buttons: on screen, maybe below
            b = page.get_by_role("button", name=name, exact=True).first.bounding_box()
            assert b and b["x"] + b["width"] <= 1440, (name, b)
        page.screenshot(path=str(out / "panel_1440.png"))
        page.get_by_role("button", name="Review mode (keyboard)").click()
        r = Review(page)
        r.pos.wait_for()
        _, lid = r.current()
        for name in ("Accept [a]", "Next [n] ▶"):
            b = page.get_by_role("button", name=name, exact=True).first.bounding_box()
            assert b and b["x"] + b["width"] <= 1440 and b["y"] + b["height"] <= 900, (name, b)
        before = gt_snapshot(ds)
        x, y, w, h = before[lid][1]
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        for key in ("ArrowRight", "ArrowDown", "Shift+ArrowLeft"):
            page.keyboard.press(key)
        page.get_by_text("Box edited, not saved", exact=False).first.wait_for()
        page.screenshot(path=str(out / "review_mode_1440.png"))
        assert not changed(before, gt_snapshot(ds))  # a draft until saved
        ms, _, _ = r.press("e", lid)
        diff = changed(before, gt_snapshot(ds))
        assert set(diff) == {lid}
        want = [x, y, w, h]
        for d in ((1, 0, 0, 0), (0, 1, 0, 0), (0, 0, -1, 0)):  # what the three keys ask for
            bx, by, bw, bh = want
            bw, bh = max(0.01, bw + 0.01 * d[2]), max(0.01, bh + 0.01 * d[3])
            bx = min(max(0.0, bx + 0.01 * d[0]), 1.0 - bw)
            by = min(max(0.0, by + 0.01 * d[1]), 1.0 - bh)
            want = [bx, by, min(bw, 1.0 - bx), min(bh, 1.0 - by)]
        assert list(diff[lid][1][1]) == pytest.approx(want, abs=1e-6)
        r.press("u")
        assert r.wait_for(lid) == lid
        deadline = time.time() + 10
        while time.time() < deadline and changed(before, gt_snapshot(ds)):
            time.sleep(0.2)
        assert not changed(before, gt_snapshot(ds))  # undone exactly


def _sidebar_filter(page, field: str, value: str) -> None:
    """Filter ``field``'s labels to ``value`` in the App's sidebar, as a user does."""
    page.get_by_text(field, exact=True).first.click()
    inp = page.get_by_placeholder("+ filter by label").first
    inp.click()
    inp.type(value)
    page.locator('[data-cy^="selector-result-"]').get_by_text(value, exact=True).first.click()


@NEEDS_CHROMIUM
def test_sidebar_filter_default_sort_and_overlooked(review_dataset):
    """Issue 23.3/23.4: a sidebar filter survives panel actions (the panel follows it and
    never clears it); the panel opens sorted by ensemble_any; a sort the user picks survives
    closing and reopening the panel; the overlooked issue lists the candidates."""
    from fiftyone import ViewField as F

    ds = review_dataset
    add_fake_ensemble(ds)
    filtered = ds.filter_labels("ground_truth", F("label") == "person")
    n_filtered = len(filtered)

    def queue_total(score, **kw) -> int:
        return review.review_page(filtered, score=score, limit=1, **kw).total

    def filter_holds(what: str) -> None:
        txt = page.get_by_text(re.compile(r"^\d+ samples$")).first
        page.wait_for_timeout(800)  # the issue saw the filter go ~4 s (here <1 s) after
        assert txt.inner_text() == f"{n_filtered} samples", f"sidebar filter lost after {what}"

    with app_page(ds, "filter") as page:
        _wait_selected(page, "score", "ensemble_any")  # the default sort
        _sidebar_filter(page, "ground_truth", "person")
        page.get_by_text(re.compile(rf"Queue: 1–\d+ of {queue_total('ensemble_any')}\b")
                         ).first.wait_for()
        filter_holds("applying it")
        # ten panel actions
        _choose(page, "ensemble_any", "cleanlab_swap")
        page.get_by_text(re.compile(rf"of {queue_total('cleanlab_swap')}\b")).first.wait_for()
        filter_holds("a sort change")
        _choose(page, "any suspect", "all scored labels")
        n_all = queue_total("cleanlab_swap", suspects_only=False)
        page.get_by_text(re.compile(rf"Queue: 1–12 of {n_all}\b")).first.wait_for()
        filter_holds("an issue change")
        page.get_by_role("button", name="Page ▶").click()
        page.get_by_text(re.compile(rf"Queue: 13–")).first.wait_for()
        filter_holds("next page")
        page.get_by_role("button", name="◀ Page").click()
        page.get_by_text(re.compile(rf"Queue: 1–12 of")).first.wait_for()
        filter_holds("previous page")
        page.get_by_role("button", name="Accept", exact=True).first.click()
        page.get_by_text("✔", exact=False).first.wait_for()
        filter_holds("accept")
        page.get_by_role("button", name=re.compile("^Undo")).first.click()
        page.get_by_text("undone:", exact=False).first.wait_for()
        filter_holds("undo")
        page.get_by_role("button", name="Review mode (keyboard)").click()
        r = Review(page)
        r.pos.wait_for()
        filter_holds("review mode")
        r.press("n")
        filter_holds("next label")
        page.get_by_role("button", name="◀ Back to the list").click()
        page.get_by_text("Queue: ", exact=False).first.wait_for()
        filter_holds("back to the list")
        _panel(page).get_by_text("log y", exact=True).first.click()
        filter_holds("log y")
        page.get_by_role("button", name="Refresh", exact=True).click()
        page.get_by_text("Queue: ", exact=False).first.wait_for()
        filter_holds("refresh")
        page.wait_for_timeout(3500)
        filter_holds("waiting 4 s")

        # the overlooked issue: the candidates, sorted by the candidates' score
        _choose(page, "all scored labels", "suspect:overlooked")
        page.get_by_role("button", name="Adopt", exact=True).first.wait_for()
        n_cand = review.issue_counts(filtered)["suspect:overlooked"]
        page.get_by_text(re.compile(rf"Queue: 1–\d+ of {n_cand}\b")).first.wait_for()
        _wait_selected(page, "score", "cleanlab_overlooked")

        # closed and opened again: the sort the user chose (cleanlab_swap) is back
        page.locator('[data-cy="panel-tab-label_review"] button[title="Close"]').click()
        page.get_by_text("Queue: ", exact=False).first.wait_for(state="detached")
        page.wait_for_timeout(1500)
        # the App itself re-reads its page when panels open or close (its spaces change)
        print("after closing the panel:",
              page.get_by_text(re.compile(r"^\d+ samples$")).first.inner_text())
        _open_panel_menu(page)
        page.get_by_text("Label review", exact=True).first.click()
        page.get_by_text("Queue: ", exact=False).first.wait_for()
        _wait_selected(page, "score", "cleanlab_swap")


@pytest.fixture()
def small_review_dataset(request):
    """8 real coco128 images with jittered predictions and cleanlab-like scores: a "Grade
    labels" run from the App (shipped box grader, consistency, ensemble) takes ~15 s on it."""
    yield from _scored_clone(request.getfixturevalue("coco128_base"), 8)


PROGRESS_RE = re.compile(r"\b([a-z_]+) (\d+)/(\d+)\b")


@NEEDS_CHROMIUM
def test_grade_run_refreshes_the_panel(small_review_dataset):
    """Issue 23.7: "Grade labels" run from the App streams each step's progress, and when it
    ends the open Label review panel shows the run's scores (its counts, the ensemble sort,
    the queue) without a click on Refresh."""
    ds = small_review_dataset
    with app_page(ds, "grade_refresh", viewport=(1440, 900)) as page:
        page.locator("img[src^='data:image/jpeg']").first.wait_for()
        _wait_selected(page, "score", "cleanlab_badloc")  # no ensemble yet
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.keyboard.press("`")  # the App's operator browser
        page.locator('[data-cy="operators-browser-search"]').wait_for()
        page.keyboard.type("Grade labels")
        page.get_by_text("label-grader: Grade labels", exact=True).click()
        # the model-free run on the fixture's predictions: box grader, consistency, ensemble
        page.get_by_text("Existing model predictions; blank", exact=False).locator(
            "xpath=following::input[1]").fill("predictions")
        page.get_by_text("yolox-nano", exact=True).last.click()
        page.get_by_role("option", name="none (model-free judges only)").click()
        for name in ("Run zoom", "Run overlooked", "Run cleanlab"):
            page.get_by_label(name).uncheck()
        page.get_by_role("button", name="Execute", exact=True).click()
        seen: dict[str, set[int]] = {}
        deadline = time.time() + 240
        refreshed = False
        while time.time() < deadline and not refreshed:
            for step, done, total in PROGRESS_RE.findall(page.evaluate(
                    "() => document.body.innerText")):
                if step in ("boxgrader", "consistency", "ensemble"):
                    seen.setdefault(step, set()).add(int(done))
            refreshed = page.evaluate(
                "() => [...document.querySelectorAll('[data-label-grader-control=score] option')]"
                ".some(o => o.text === 'ensemble_any')")
            time.sleep(0.2)
        print("progress seen:", {k: sorted(v) for k, v in seen.items()})
        # per-step progress while the run went on: a step's count moving, or several steps
        assert len(seen) >= 2 or any(len(v) >= 2 for v in seen.values()), seen
        assert refreshed, "the panel did not show the run's scores when it ended"
        ds.reload()  # the run wrote in the App server's process
        assert "label_grader_ensemble" in ds.list_runs()
        # no sort chosen by the user: the panel now sorts by the ensemble the run made
        _wait_selected(page, "score", "ensemble_any")
        total = review.review_page(ds, score="ensemble_any", limit=1).total
        page.get_by_text(re.compile(rf"Queue: 1–\d+ of {total}\b")).first.wait_for()
        counts = _panel(page).get_by_text("Suspect labels in the current view", exact=False)
        assert "(ensemble)" in counts.first.locator("xpath=..").inner_text()
        page.get_by_text("queue re-read after the grading run", exact=False).first.wait_for()


REFIT_DECISIONS = 25  # grader.ensemble.REFIT_EVERY: the panel re-ranks after this many


@NEEDS_CHROMIUM
def test_review_decisions_re_rank_the_queue(review_dataset):
    """The learning queue in the browser: after REFIT_EVERY (25) decisions by key, the
    ensemble refits on them and the panel goes on from the top of the re-ordered queue, the
    reviewed labels left out; the order shown is the database's new order, which differs
    from the order before."""
    from grader.ensemble import REFIT_EVERY, compute_ensemble

    assert REFIT_EVERY == REFIT_DECISIONS
    ds = review_dataset
    compute_ensemble(ds, "ground_truth")
    before = [it.label_id for it in review.review_queue(ds, score="ensemble_any",
                                                        suspects_only=False)]
    ids, swaps = ds.values(["ground_truth.detections.id", "ground_truth.detections.cleanlab_swap"])
    swap = {i: v for ii, vv in zip(ids, swaps) for i, v in zip(ii or [], vv or [])}
    with app_page(ds, "rerank") as page:
        _wait_selected(page, "score", "ensemble_any")
        _choose(page, "any suspect", "all scored labels")
        page.get_by_text(re.compile(rf"Queue: 1–12 of {len(before)}\b")).first.wait_for()
        page.get_by_role("button", name="Review mode (keyboard)").click()
        r = Review(page)
        r.pos.wait_for()
        decided = []
        _, lid = r.current()
        for i in range(REFIT_DECISIONS):
            # a curator who finds the labels cleanlab calls swapped wrong: the refit learns it
            assert lid == before[i], (i, lid)  # the queue's order before any refit
            decided.append(lid)
            key = "d" if swap[lid] < 0.5 else "a"
            if i < REFIT_DECISIONS - 1:
                lid = r.press(key, lid)[2]
            else:
                r.keys.wait_for()
                page.evaluate("() => document.activeElement && document.activeElement.blur()")
                page.keyboard.press(key)
        page.get_by_text("Queue re-ranked", exact=False).first.wait_for()
        after = [it.label_id for it in review.review_queue(ds, score="ensemble_any",
                                                           suspects_only=False)]
        assert not set(decided) & set(after)
        rest = [x for x in before if x not in set(decided)]
        assert sorted(after) == sorted(rest) and after[:5] != rest[:5], "the refit moved nothing"
        assert r.wait_for(after[0]) == after[0]
        assert r.current()[0] == 1  # from the top of the new order
        shown = [after[0]]
        for _ in range(4):
            shown.append(r.press("n")[2])
        assert shown == after[:5]
