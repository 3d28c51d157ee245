"""Box-grader training as grade() does it on classes no shipped model knows: time and quality.

(Was ``bench/grade_speed.py``; that name now times a whole ``grade()`` run step by step.)

    .venv/bin/python bench/boxgrader_train_speed.py --data coco128-custom   # coco128, classes renamed
    .venv/bin/python bench/boxgrader_train_speed.py --data raccoon          # 200 images, one class
    .venv/bin/python bench/boxgrader_train_speed.py --data coco128-custom --train-kw '{"per_object": [1, 2, 2]}'

Errors are injected (``grader.noise.inject_errors``, seeded) into a copy of the ground truth;
the box grader is trained on that noisy copy (all a user has) with grade()'s defaults
(``grader.pipeline.boxgrader_train_settings``, overridden by ``--train-kw``) and grades the
same labels. Prints the training time (wall and CPU, per image; features vs head) and the
AUROC of ``boxgrader_p_not_good`` on badloc / spurious / duplicate and of
``boxgrader_p_other_class`` on swap (positives = boxes with that error, negatives = clean).
"coco128-custom" renames every COCO class to ``class_NN`` so that no detector class name
matches (the detector's class evidence on the labelled class is then unavailable, as on a
user's own taxonomy). A private mongod is started; nothing touches FiftyOne's database.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile

import _harness as H

#: error rates injected (raccoon has one class: no swap there)
RATES = {"badloc": 0.1, "swap": 0.1, "spurious": 0.1, "duplicate": 0.05}


def load(data: str, n_images: int | None):
    ds = H.load("coco128" if data == "coco128-custom" else data, f"C-speed-{data.split('-')[0]}")
    if data == "coco128-custom":
        classes = sorted(ds.distinct("ground_truth.detections.label"))
        rename = {c: f"class_{i:02d}" for i, c in enumerate(classes)}
        H.rename_classes(ds, rename.__getitem__, [rename[c] for c in classes])
    if n_images:
        ds = ds.select(sorted(ds.values("id"))[:n_images]).clone(name=f"{ds.name}-{n_images}")
    return ds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("raccoon", "coco128-custom", "coco128"),
                    default="coco128-custom")
    ap.add_argument("--n-images", type=int, default=None, help="first N images only")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--train-kw", default="{}", help="JSON dict overriding grade()'s settings")
    ap.add_argument("--out-dir", default=None,
                    help="checkpoint folder (default: a temp dir); reusing one reuses its features")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)

    H.one_thread_env()   # (as importing eval_judges for _start_db did)
    H.start_db()
    from grader.evaluate import evaluate_judges
    from grader.judges.boxgrader import grade_boxgrader, train_boxgrader
    from grader.pipeline import boxgrader_train_settings

    ds = load(args.data, args.n_images)
    rates = dict(RATES)
    if len(ds.distinct("ground_truth.detections.label")) < 2:
        rates.pop("swap")
    H.inject(ds, rates=rates, seed=args.noise_seed)
    n_img, n_box = len(ds), ds.count("noisy.detections")
    kw = boxgrader_train_settings(n_box, json.loads(args.train_kw))
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="lg-boxgrader-train-speed-")

    t: dict[str, float] = {}
    with H.timed(t, "train"):
        res = train_boxgrader(ds, "noisy", out_dir, **kw)
    with H.timed(t, "grade"):
        grade_boxgrader(ds, "noisy", checkpoint=res.best_checkpoint)
    result = evaluate_judges(ds, "noisy", pred_field=None, exclude_tag=None)

    print(f"== {args.data}: {n_img} images, {n_box} noisy boxes; train_boxgrader{kw}")
    print(f"train: wall {t['train']:.1f} s (features {res.seconds['features']:.1f} s, head "
          f"{res.seconds['train']:.1f} s) = {t['train'] / n_img:.3f} s/image; CPU "
          f"{t['train_cpu']:.1f} s = {t['train_cpu'] / n_img:.3f} CPU-s/image; "
          f"{res.num_train}+{res.num_val} examples")
    print(f"  per phase, wall s: {res.seconds}; CPU s: {res.cpu_seconds}")
    print(f"grade: wall {t['grade']:.1f} s = {t['grade'] / n_img:.3f} s/image; CPU "
          f"{t['grade_cpu']:.1f} s")
    print(f"injected: {result['counts']}")
    figures = {"data": args.data, "images": n_img, "boxes": n_box, "train_kw": kw,
               "train_s": t["train"], "train_cpu_s": t["train_cpu"],
               "train_s_per_image": t["train"] / n_img, "grade_s": t["grade"],
               "seconds": res.seconds, "cpu_seconds": res.cpu_seconds, "auroc": {}}
    H.print_scores(result, [(err, f"boxgrader:{score}") for err, score in (
        ("badloc", "boxgrader_p_not_good"), ("spurious", "boxgrader_p_not_good"),
        ("duplicate", "boxgrader_p_not_good"), ("swap", "boxgrader_p_other_class"),
        ("badloc", "boxgrader_p_bad"), ("spurious", "boxgrader_p_background"))],
        figures, label=lambda name: name.split(":", 1)[1])
    H.write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
