"""Box-grader training as grade() does it on classes no shipped model knows: time and quality.

    .venv/bin/python bench/grade_speed.py --data coco128-custom   # coco128, classes renamed
    .venv/bin/python bench/grade_speed.py --data raccoon          # 200 images, one class
    .venv/bin/python bench/grade_speed.py --data coco128-custom --train-kw '{"per_object": [1, 2, 2]}'

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
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))

#: error rates injected (raccoon has one class: no swap there)
RATES = {"badloc": 0.1, "swap": 0.1, "spurious": 0.1, "duplicate": 0.05}


def load(data: str, n_images: int | None):
    import fiftyone as fo
    from grader import io

    if data == "raccoon":
        root = DATA / "raccoon"
        ds = fo.Dataset.from_dir(dataset_type=fo.types.VOCDetectionDataset,
                                 data_path=str(root / "images"),
                                 labels_path=str(root / "annotations"),
                                 label_field="ground_truth", name="C-speed-raccoon",
                                 overwrite=True)
    else:
        root = DATA / "coco128"
        ds = io.load_coco(str(root / "images"), str(root / "labels.json"),
                          name="C-speed-coco128", overwrite=True)
        if data == "coco128-custom":
            classes = sorted(ds.distinct("ground_truth.detections.label"))
            rename = {c: f"class_{i:02d}" for i, c in enumerate(classes)}
            labels = ds.values("ground_truth.detections.label")
            ds.set_values("ground_truth.detections.label",
                          [[rename[l] for l in ls] if ls else ls for ls in labels])
            ds.default_classes = [rename[c] for c in classes]
            ds.save()
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

    from eval_judges import _start_db

    _start_db()
    from grader.evaluate import evaluate_judges
    from grader.judges.boxgrader import grade_boxgrader, train_boxgrader
    from grader.noise import inject_errors
    from grader.pipeline import boxgrader_train_settings

    ds = load(args.data, args.n_images)
    rates = dict(RATES)
    if len(ds.distinct("ground_truth.detections.label")) < 2:
        rates.pop("swap")
    inject_errors(ds, "ground_truth", "noisy", rates=rates, seed=args.noise_seed, overwrite=True)
    n_img, n_box = len(ds), ds.count("noisy.detections")
    kw = boxgrader_train_settings(n_box, json.loads(args.train_kw))
    out_dir = args.out_dir or tempfile.mkdtemp(prefix="lg-grade-speed-")

    t0, c0 = time.perf_counter(), time.process_time()
    res = train_boxgrader(ds, "noisy", out_dir, **kw)
    t_train, cpu_train = time.perf_counter() - t0, time.process_time() - c0
    t1, c1 = time.perf_counter(), time.process_time()
    grade_boxgrader(ds, "noisy", checkpoint=res.best_checkpoint)
    t_grade, cpu_grade = time.perf_counter() - t1, time.process_time() - c1
    result = evaluate_judges(ds, "noisy", pred_field=None, exclude_tag=None)

    print(f"== {args.data}: {n_img} images, {n_box} noisy boxes; train_boxgrader{kw}")
    print(f"train: wall {t_train:.1f} s (features {res.seconds['features']:.1f} s, head "
          f"{res.seconds['train']:.1f} s) = {t_train / n_img:.3f} s/image; CPU {cpu_train:.1f} s "
          f"= {cpu_train / n_img:.3f} CPU-s/image; {res.num_train}+{res.num_val} examples")
    print(f"  per phase, wall s: {res.seconds}; CPU s: {res.cpu_seconds}")
    print(f"grade: wall {t_grade:.1f} s = {t_grade / n_img:.3f} s/image; CPU {cpu_grade:.1f} s")
    print(f"injected: {result['counts']}")
    figures = {"data": args.data, "images": n_img, "boxes": n_box, "train_kw": kw,
               "train_s": t_train, "train_cpu_s": cpu_train, "train_s_per_image": t_train / n_img,
               "grade_s": t_grade, "seconds": res.seconds, "cpu_seconds": res.cpu_seconds,
               "auroc": {}}
    for err, score in (("badloc", "boxgrader_p_not_good"), ("spurious", "boxgrader_p_not_good"),
                       ("duplicate", "boxgrader_p_not_good"), ("swap", "boxgrader_p_other_class"),
                       ("badloc", "boxgrader_p_bad"), ("spurious", "boxgrader_p_background")):
        row = result["gt"].get(err, {}).get(f"boxgrader:{score}")
        if row:
            print(f"  {err:10s} {score:28s} AUROC {row['auroc']:.3f}  AP {row['ap']:.3f}")
            figures["auroc"][f"{err}:{score}"] = row["auroc"]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
