"""README screenshots of the Label review panel on a real judge run (not a fixture).

``python tests/panel_screenshots.py [--images 64] [--out docs]``: loads coco128, predicts with
the shipped YOLOX-Nano (cv2.dnn), runs cleanlab ObjectLab, serves the App (panel_app_server.py)
and has Chromium open the panel (``panel.png``), its review mode (``review_mode.png``) and a
box edited there by the nudge keys (``review_box_edit.png``).
Uses its own mongod (tests/mongod_helper.py) unless FIFTYONE_DATABASE_URI is set, and a
throw-away plugins dir linking this checkout.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
if "FIFTYONE_DATABASE_URI" not in os.environ:
    from mongod_helper import MongodServer

    _server = MongodServer(Path(tempfile.mkdtemp(prefix="lg-shots-db-"))).start()
    os.environ["FIFTYONE_DATABASE_URI"] = _server.uri
_plugins = Path(tempfile.mkdtemp(prefix="lg-shots-plugins-"))
(_plugins / "label-grader").symlink_to(REPO)
os.environ["FIFTYONE_PLUGINS_DIR"] = str(_plugins)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--model", default="yolox-nano")
    ap.add_argument("--out", default=str(REPO / "tests" / "_output"))
    ap.add_argument("--viewport", default="1440x900",
                    help="browser window WxH (issue 23: the panel must be usable at 1440x900)")
    a = ap.parse_args()

    from grader import io, review
    from grader.detectors import run_detector
    from grader.judges.cleanlab import run_cleanlab
    from test_panel_browser import ARGS, CHROMIUM, _free_port, _open_panel_menu, _start_app

    data = REPO.parent / "shared" / "data" / "coco128"
    if not data.exists():
        data = Path("/work/shared/data/coco128")
    ds = io.load_coco(str(data / "images"), str(data / "labels.json"),
                      name=f"coco128-review-{int(time.time())}")
    if a.images < len(ds):
        ds = ds.limit(a.images).clone(name=ds.name + "-sub")
    ds.persistent = True
    t = time.time()
    run_detector(ds, model=a.model)
    print(f"{a.model} on {len(ds)} images: {time.time() - t:.1f}s")
    t = time.time()
    rep = run_cleanlab(ds, "ground_truth", "predictions", high_probability_threshold=0.6)
    print(f"cleanlab: {time.time() - t:.1f}s", rep.summary())
    review.ensure_review_indexes(ds)

    from playwright.sync_api import sync_playwright

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc, _ = _start_app(ds.name, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            vw, vh = (int(v) for v in a.viewport.lower().split("x"))
            page = browser.new_page(viewport={"width": vw, "height": vh})
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/datasets/{ds.name}")
            page.wait_for_selector('[data-cy="new-panel-btn"]')
            _open_panel_menu(page)
            page.get_by_text("Label review", exact=True).first.click()
            page.get_by_text("Queue: ", exact=False).first.wait_for()
            page.locator("img[src^='data:image/jpeg']").first.wait_for()
            # the histogram with a threshold and the log y axis
            thr = page.locator('[data-label-grader-control="threshold"] input')
            thr.fill("0.3")
            thr.press("Enter")
            page.locator('[data-label-grader-control="log_y"] input').check()
            time.sleep(3)
            page.screenshot(path=str(out / "panel.png"))
            page.get_by_role("button", name="Review mode (keyboard)").click()
            page.get_by_text("Recent fixes", exact=False).count()
            page.locator("img[src^='data:image/jpeg']").first.wait_for()
            time.sleep(2)
            page.screenshot(path=str(out / "review_mode.png"))
            # the box edited in place by the nudge keys, not saved yet (magenta: the edit,
            # green: the box as labelled)
            page.evaluate("() => document.activeElement && document.activeElement.blur()")
            for key in ("ArrowLeft", "ArrowLeft", "Shift+ArrowRight", "Shift+ArrowRight",
                        "Shift+ArrowDown"):
                page.keyboard.press(key)
            page.get_by_text("Box edited, not saved", exact=False).first.wait_for()
            time.sleep(1)
            page.screenshot(path=str(out / "review_box_edit.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)
        ds.delete()
    print("wrote", *(out / n for n in ("panel.png", "review_mode.png", "review_box_edit.png")))


if __name__ == "__main__":
    main()
