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
import sys
import tempfile
from pathlib import Path

import _harness as H


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
    H.start_db()
    import numpy as np  # noqa: F401
    from grader.evaluate import evaluate_judges
    from grader.judges.boxgrader import evaluate_boxgrader, grade_boxgrader, train_boxgrader

    dev = H.load("coco128", "D-boxgrader-coco128")
    if args.dev:
        ids = sorted(dev.values("id"))
        rng = np.random.default_rng(1234)
        rng.shuffle(ids)
        held = ids[: len(ids) // 5]
        train_view, test = dev.exclude(held), dev.select(held)
        split = "coco128 80% -> coco128 20% (dev)"
    else:
        train_view = dev
        test = H.load("coco128-val", "D-boxgrader-coco128-val")
        split = "coco128 -> coco128-val"
    kw = json.loads(args.train_kw)
    if args.epochs:
        kw["epochs"] = args.epochs
    if args.per_object:
        kw["per_object"] = tuple(args.per_object)
    out_dir = args.out_dir or str(tmp / "ckpt")

    t: dict[str, float] = {}   # the machine is shared: CPU time is the steadier figure
    with H.timed(t, "train"):
        res = train_boxgrader(train_view, "ground_truth", out_dir, seed=args.seed,
                              classes=dev.distinct("ground_truth.detections.label"), **kw)
    t_train, cpu_train = t["train"], t["train_cpu"]
    n_train_boxes = res.num_train + res.num_val
    ev = evaluate_boxgrader(test, "ground_truth", checkpoint=res.best_checkpoint)

    H.inject(test, seed=args.noise_seed)
    n_labels = test.count("noisy.detections")
    with H.timed(t, "grade"):
        rep = grade_boxgrader(test, "noisy", checkpoint=res.best_checkpoint)
    t_grade, cpu_grade = t["grade"], t["grade_cpu"]
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
    figures = {"split": split, "accuracy": ev.accuracy, "fpr": ev.false_positive_rate,
               "confusion": ev.confusion, "train_seconds": t_train,
               "train_s_per_1k": 1000 * t_train / n_train_boxes, "train_cpu_seconds": cpu_train,
               "grade_s_per_1k": 1000 * t_grade / max(n_labels, 1), "auroc": {}}
    H.print_scores(result, lambda err, name: "boxgrader" in name, figures)
    H.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
