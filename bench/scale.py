"""Scale bench: time and peak memory of the cleanlab judge, ensemble, panel refresh and bulk
accept at 1k / 10k / 100k synthetic images (~7 GT and ~10 predicted boxes each, 80 classes),
against the floor (cleanlab's own scorer on the same arrays in memory) and FiftyOne Brain.

Every measured step runs in a fresh subprocess (so its peak RSS is its own) on a private
mongod started here. Usage::

    .venv/bin/python bench/scale.py --sizes 1000 10000 100000 --brain-max 10000

Prints one JSON line per step and a table at the end (ratios come from the same run).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

N_CLASSES = 80


def _env(uri: str) -> None:
    os.environ["FIFTYONE_DATABASE_URI"] = uri
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ["FIFTYONE_SHOW_PROGRESS_BARS"] = "false"


def build(name: str, n: int, seed: int = 0, probs: bool = False) -> None:
    """Synthetic detection dataset: ~7 GT boxes / image, ~10 predictions (85% of GT found, 10%
    of those with another class, ~4 false positives), confidence in [0.05, 1)."""
    import fiftyone as fo
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = [f"class_{i:02d}" for i in range(N_CLASSES)]
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds = fo.Dataset(name)
    ds.persistent = True
    ds.default_classes = classes
    ds.save()

    # One sample through FiftyOne declares the schema; the rest go in as raw documents in
    # FiftyOne's own layout (add_samples of 100k images x 17 labels takes ~50 min here).
    from bson import ObjectId
    from datetime import datetime

    first = fo.Detection(label=classes[0], bounding_box=[0.1, 0.1, 0.2, 0.2], confidence=0.9)
    if probs:
        first["probs"] = [1.0 / N_CLASSES] * N_CLASSES
    ds.add_sample(fo.Sample(filepath=f"/synthetic/{name}/first.jpg",
                            metadata=fo.ImageMetadata(width=640, height=480),
                            ground_truth=fo.Detections(detections=[fo.Detection(
                                label=classes[0], bounding_box=[0.1, 0.1, 0.2, 0.2])]),
                            predictions=fo.Detections(detections=[first])))
    coll = ds._sample_collection
    dsid = ds._doc.id

    def det(label, box, conf=None):
        d = {"_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [],
             "label": classes[label], "bounding_box": [float(x) for x in box]}
        if conf is not None:
            d["confidence"] = conf
            if probs:
                p = rng.dirichlet(np.full(N_CLASSES, 0.1)) * (1 - conf)
                p[label] = conf
                d["probs"] = p.round(4).tolist()
        return d

    def batch(lo, hi):
        now = datetime.utcnow()
        for i in range(lo, hi):
            ng = int(rng.integers(4, 11))
            xy = rng.uniform(0, 0.8, (ng, 2))
            wh = rng.uniform(0.03, 0.2, (ng, 2))
            gl = rng.integers(0, N_CLASSES, ng)
            gt = [det(int(gl[j]), [*xy[j], *wh[j]]) for j in range(ng)]
            pr = []
            for j in range(ng):
                if rng.uniform() < 0.85:
                    c = int(gl[j]) if rng.uniform() < 0.9 else int(rng.integers(0, N_CLASSES))
                    b = [*(xy[j] + rng.normal(0, 0.01, 2)), *(wh[j] * rng.uniform(0.9, 1.1, 2))]
                    pr.append(det(c, b, float(rng.uniform(0.3, 1.0))))
            for _ in range(int(rng.integers(2, 7))):
                b = [*rng.uniform(0, 0.8, 2), *rng.uniform(0.03, 0.2, 2)]
                pr.append(det(int(rng.integers(0, N_CLASSES)), b, float(rng.uniform(0.05, 0.6))))
            yield {"_id": ObjectId(), "filepath": f"/synthetic/{name}/{i:07d}.jpg", "tags": [],
                   "metadata": {"_cls": "ImageMetadata", "width": 640, "height": 480},
                   "_media_type": "image", "_rand": float(rng.uniform()),
                   "ground_truth": {"_cls": "Detections", "detections": gt},
                   "predictions": {"_cls": "Detections", "detections": pr},
                   "_dataset_id": dsid, "created_at": now, "last_modified_at": now}

    step = 5000
    for lo in range(0, n - 1, step):
        coll.insert_many(list(batch(lo, min(n - 1, lo + step))), ordered=False)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def step(name: str, what: str) -> dict:
    """Run one measured step in this process; return seconds and peak RSS."""
    import fiftyone as fo

    ds = fo.load_dataset(name)
    base = _rss_mb()
    out: dict = {"dataset": name, "step": what, "images": len(ds)}
    if what == "cleanlab":
        from grader.judges.cleanlab import run_cleanlab

        t = time.perf_counter()
        rep = run_cleanlab(ds, overwrite=True)
        out["seconds"] = time.perf_counter() - t
        out["labels_scored"] = rep.labels_scored
    elif what == "floor":
        # cleanlab's own scorer (aux inputs + overlooked / swap / badloc box scores + pooling)
        # on exactly the arrays the judge builds, already in memory: the library floor.
        from cleanlab.object_detection import rank as cl_rank
        from grader.judges.cleanlab import CleanlabParams, build_inputs
        from grader.report import RunReport

        inp = build_inputs(ds, CleanlabParams(), RunReport("floor"))
        out["boxes_gt"] = sum(len(l["labels"]) for l in inp.labels)
        out["entries_pred"] = sum(len(a) for p in inp.predictions for a in p)
        t = time.perf_counter()
        cl_rank.get_label_quality_scores(inp.labels, inp.predictions, verbose=False)
        out["seconds"] = time.perf_counter() - t
    elif what == "brain":
        import fiftyone.brain as fob

        t = time.perf_counter()
        fob.compute_mistakenness(ds, "predictions", label_field="ground_truth")
        out["seconds"] = time.perf_counter() - t
    elif what == "ensemble":
        from grader.ensemble import compute_ensemble

        t = time.perf_counter()
        compute_ensemble(ds, "ground_truth")
        out["seconds"] = time.perf_counter() - t
    elif what == "panel":
        # What the review panel does on refresh (panels/review.py): available scores, then
        # counts + histogram + first page (one snapshot aggregation where helper F's
        # review_snapshot exists; issue_counts + review_page otherwise).
        from grader import review as rv
        from grader.review import queue as q

        if hasattr(q, "ensure_review_indexes"):
            q.ensure_review_indexes(ds, "ground_truth")     # once per dataset, not per click
        times = []
        for _ in range(3):
            t = time.perf_counter()
            avail = q.available_scores(ds, "ground_truth")
            if hasattr(q, "review_snapshot"):
                snap = q.review_snapshot(ds, "ground_truth", skip=0, limit=20, bins=20,
                                         available=avail)
                n_items = len(snap["page"].items)
            else:
                q.issue_counts(ds, "ground_truth")
                n_items = len(q.review_page(ds, "ground_truth", limit=20).items)
            times.append(time.perf_counter() - t)
        out["seconds"] = sorted(times)[1]          # median of 3 refreshes
        out["first_refresh_s"] = times[0]
        out["page_items"] = n_items
        out["labels"] = ds.count("ground_truth.detections")
    elif what == "accept":
        from grader.review import fixes

        # ~100k labels (the issue's target size), or all labels of smaller datasets
        per = max(1, ds.count("ground_truth.detections") // max(len(ds), 1))
        view = ds.limit(100000 // per) if len(ds) * per > 100000 else ds
        out["labels"] = view.count("ground_truth.detections")
        t = time.perf_counter()
        fixes.accept_labels(view, "ground_truth")
        out["seconds"] = time.perf_counter() - t
    out["peak_rss_mb"] = _rss_mb()
    out["rss_over_import_mb"] = _rss_mb() - base
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--steps", nargs="+",
                    default=["floor", "cleanlab", "brain", "ensemble", "panel", "accept"])
    ap.add_argument("--brain-max", type=int, default=10000)
    ap.add_argument("--floor-max", type=int, default=10 ** 9)
    ap.add_argument("--probs", action="store_true", help="per-class probs on predictions")
    ap.add_argument("--big-steps", nargs="+", default=None,
                    help="steps for sizes above 10,000 (default: --steps)")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--uri", help=argparse.SUPPRESS)
    ap.add_argument("--timeout", type=int, default=1800)
    a = ap.parse_args()

    if a.step:  # child: one measured step
        _env(a.uri)
        print("RESULT " + json.dumps(step(a.dataset, a.step)), flush=True)
        return

    from mongod_helper import MongodServer

    tmp = Path(tempfile.mkdtemp(prefix="lg-scale-"))
    server = MongodServer(tmp / "db").start()
    _env(server.uri)
    results = []
    try:
        for n in a.sizes:
            name = f"E-scale-{n}" + ("-probs" if a.probs else "")
            t = time.perf_counter()
            build(name, n, probs=a.probs)
            print(json.dumps({"dataset": name, "step": "build",
                              "seconds": time.perf_counter() - t}), flush=True)
            for s in (a.big_steps if a.big_steps and n > 10000 else a.steps):
                if s == "brain" and n > a.brain_max or s == "floor" and n > a.floor_max:
                    continue
                cmd = [sys.executable, __file__, "--step", s, "--dataset", name,
                       "--uri", server.uri]
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
                    lines = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
                    r = json.loads(lines[-1][7:]) if lines else {
                        "dataset": name, "step": s, "error": p.stderr[-600:]}
                except subprocess.TimeoutExpired:
                    r = {"dataset": name, "step": s, "error": f"timeout {a.timeout}s"}
                r["images"] = n
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        server.stop()
    _table(results)


def _table(results: list[dict]) -> None:
    by = {(r["images"], r["step"]): r for r in results}
    sizes = sorted({r["images"] for r in results})
    steps = [s for s in ("floor", "cleanlab", "brain", "ensemble", "panel", "accept")
             if any((n, s) in by for n in sizes)]
    print("\n| images | step | seconds | peak RSS MB | vs floor | vs Brain | growth vs 10x fewer |")
    print("|---|---|---|---|---|---|---|")
    for n in sizes:
        for s in steps:
            r = by.get((n, s))
            if not r:
                continue
            if "seconds" not in r:
                print(f"| {n} | {s} | {r.get('error', '?')[:60]} | | | | |")
                continue
            fl, br, prev = by.get((n, "floor")), by.get((n, "brain")), by.get((n // 10, s))
            ratio = lambda o: f"{r['seconds'] / o['seconds']:.2f}x" if o and o.get("seconds") else ""
            # floor and Brain compare with the cleanlab judge only (same inputs, same question)
            print(f"| {n} | {s} | {r['seconds']:.2f} | {r.get('peak_rss_mb', 0):.0f} | "
                  f"{ratio(fl) if s == 'cleanlab' else ''} | "
                  f"{ratio(br) if s in ('cleanlab', 'floor') else ''} | {ratio(prev)} |")


if __name__ == "__main__":
    main()
