"""Box grader (ClipGrader's recipe on YOLOX-Nano features): train on coco128, evaluate on coco128-val.

    .venv/bin/python bench/boxgrader.py              # train on coco128, report on coco128-val
    .venv/bin/python bench/boxgrader.py --dev        # tuning: train on 80% of coco128's images,
                                                     # report on the other 20% (never on val)

Prints, in one run:

- the ClipGrader protocol on the held-out images (one good, one bad IoU 0.5-0.8 and one
  background IoU <= 0.2 example per GT object of >= 20 px): 3-way accuracy, false-positive
  rate (bad or background graded good), confusion matrix, per-class accuracy;
- AUROC / AP of ``boxgrader_p_bad`` (badloc), ``_p_background`` (spurious),
  ``_p_other_class`` (swap) and ``_p_not_good`` (any) on errors injected with
  ``grader.noise.inject_errors`` (seeded) into the held-out images' ground truth, through
  ``grader.evaluate.evaluate_judges`` (positives = boxes with that error, negatives = clean);
- seconds per 1k boxes to train (features + head) and to grade.

A private mongod is started; nothing touches FiftyOne's default database.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dev", action="store_true",
                    help="tune on coco128 only: 80/20 image split of coco128")
    ap.add_argument("--out-dir", default=None, help="checkpoint folder (default: a temp dir)")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--noise-seed", type=int, default=0, help="error-injection seed")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--per-object", type=int, nargs=3, default=None, metavar=("GOOD", "BAD", "BG"))
    ap.add_argument("--train-kw", default="{}", help="JSON dict of extra train_boxgrader kwargs")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="lg-boxgrader-bench-"))
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        from mongod_helper import MongodServer
        server = MongodServer(tmp / "db").start()
        os.environ["FIFTYONE_DATABASE_URI"] = server.uri
    import numpy as np  # noqa: F401
    from grader import io
    from grader.evaluate import evaluate_judges
    from grader.judges.boxgrader import evaluate_boxgrader, grade_boxgrader, train_boxgrader
    from grader.noise import inject_errors

    dev = io.load_coco(str(DATA / "coco128" / "images"), str(DATA / "coco128" / "labels.json"),
                       name="D-boxgrader-coco128", overwrite=True)
    if args.dev:
        ids = sorted(dev.values("id"))
        rng = np.random.default_rng(1234)
        rng.shuffle(ids)
        held = ids[: len(ids) // 5]
        train_view, test = dev.exclude(held), dev.select(held)
        split = "coco128 80% -> coco128 20% (dev)"
    else:
        train_view = dev
        root = DATA / "coco128-val"
        test = io.load_yolo(str(root / "images"), str(root / "labels"), str(root / "classes.yaml"),
                            name="D-boxgrader-coco128-val", overwrite=True)
        split = "coco128 -> coco128-val"
    kw = json.loads(args.train_kw)
    if args.epochs:
        kw["epochs"] = args.epochs
    if args.per_object:
        kw["per_object"] = tuple(args.per_object)
    out_dir = args.out_dir or str(tmp / "ckpt")

    t0, c0 = time.perf_counter(), time.process_time()
    res = train_boxgrader(train_view, "ground_truth", out_dir, seed=args.seed,
                          classes=dev.distinct("ground_truth.detections.label"), **kw)
    t_train = time.perf_counter() - t0
    cpu_train = time.process_time() - c0   # the machine is shared: CPU time is the steadier figure
    n_train_boxes = res.num_train + res.num_val
    ev = evaluate_boxgrader(test, "ground_truth", checkpoint=res.best_checkpoint)

    inject_errors(test, "ground_truth", "noisy", seed=args.noise_seed, overwrite=True)
    n_labels = test.count("noisy.detections")
    t1, c1 = time.perf_counter(), time.process_time()
    rep = grade_boxgrader(test, "noisy", checkpoint=res.best_checkpoint)
    t_grade, cpu_grade = time.perf_counter() - t1, time.process_time() - c1
    result = evaluate_judges(test, "noisy", pred_field=None, exclude_tag=None)

    print(f"== box grader (YOLOX-Nano at 416 + 832 px + zoom crop; tree quality model, MLP class head), {split}")
    print(f"train: {n_train_boxes} synthetic boxes ({res.num_train} train / {res.num_val} val "
          f"images' boxes), {len(res.history)} epochs, good_threshold={res.good_threshold:.2f}")
    print(f"  wall {t_train:.1f} s (features {res.seconds['features']:.1f} s, head "
          f"{res.seconds['train']:.1f} s) = {1000 * t_train / n_train_boxes:.2f} s per 1k boxes; "
          f"CPU {cpu_train:.1f} s = {1000 * cpu_train / n_train_boxes:.2f} CPU-s per 1k boxes")
    print(f"grade: {n_labels} boxes in {t_grade:.1f} s = {1000 * t_grade / max(n_labels, 1):.2f} "
          f"s per 1k boxes (CPU {1000 * cpu_grade / max(n_labels, 1):.2f} CPU-s per 1k, incl. "
          f"loading the model); skips {dict(rep.skipped)}")
    print()
    print(ev.table(max_classes=80))
    print()
    print(f"injected errors (seed {args.noise_seed}) counts: {result['counts']}")
    print(f"{'error':10s} {'score':34s} {'AUROC':>7s} {'AP':>7s}")
    figures = {"split": split, "accuracy": ev.accuracy, "fpr": ev.false_positive_rate,
               "confusion": ev.confusion, "train_seconds": t_train,
               "train_s_per_1k": 1000 * t_train / n_train_boxes, "train_cpu_seconds": cpu_train,
               "grade_s_per_1k": 1000 * t_grade / max(n_labels, 1), "auroc": {}}
    for err, rows in result["gt"].items():
        for name, row in sorted(rows.items()):
            if "boxgrader" not in name:
                continue
            print(f"{err:10s} {name:34s} {row['auroc']:7.3f} {row['ap']:7.3f}")
            figures["auroc"][f"{err}:{name}"] = row["auroc"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
