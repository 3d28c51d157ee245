"""Datasets of classes no shipped model knows: what a new user's default ``grade()`` gives.

    .venv/bin/python bench/custom_classes.py                      # raccoon + coco128 custom taxonomy
    .venv/bin/python bench/custom_classes.py --data raccoon --repeats 2
    .venv/bin/python bench/custom_classes.py --grade-kw '{"finetune": true}'   # YOLOX fine-tuned

Per dataset and seed: copy the ground truth into ``noisy`` with ~5 % of each error type injected
(the truth recorded), call ``grader.grade(ds, gt_field="noisy")`` with every default, then print
AUROC (AP) per error type of the ensemble, of the best single judge, the gap between them, the
ensemble's choice per issue, overlooked recall at 1xN / 2xN (N = deleted boxes), and the time of
each ``grade()`` step.

Datasets (all are development data; choose defaults on them, never on coco128-val):

- ``raccoon``: 200 web photos, one class (``raccoon``) that no shipped detector knows;
- ``pennfudan`` (``--data pennfudan``, not a default): 170 street photos of pedestrians, one
  COCO class (``person``) in another domain and labelling convention (only pedestrians are
  boxed), so the shipped models run on it as on COCO;
- ``coco128-custom``: coco128 with its 80 classes merged into 8 names no detector uses
  (:data:`TAXONOMY`: vehicles, animals, food, tableware, ...), so every class-name match with
  the shipped detector and box grader is gone while the pixels stay real.
- ``coco128-all-custom`` (``--data coco128-all-custom``, not a default; report only, never for
  choosing defaults: it holds coco128-val): coco128 and coco128-val (256 images, 1837 boxes)
  merged as ``coco128-custom``, twice the images per fold for a detector fine-tuned on them.
- ``coco128-mixed`` (``--data coco128-mixed``, not a default): half-known labels, as a user who
  adds classes of their own to COCO's: the groups of :data:`MIXED_KEEP` keep their COCO names
  (58 % of the boxes: person, vehicles, animals, tableware), the rest are merged as in
  ``coco128-custom``. The shipped models run (they know more than half of the labels); the
  table adds each error type split by boxes of known and unknown classes.
- ``coco128-voc`` (``--data coco128-voc``, not a default): coco128 with PASCAL VOC's spellings
  of six COCO classes (:data:`VOC_SPELLINGS`: ``aeroplane``, ``diningtable``, ``motorbike``,
  ``pottedplant``, ``sofa``, ``tvmonitor``; 5 % of the boxes), as a VOC-format dataset names
  them; the split table puts those boxes under "unknown".
- ``coco128-upside-down`` (``--data coco128-upside-down``, not a default): coco128's images
  turned by 180 degrees (boxes turned with them), COCO's classes seen from a view the shipped
  detector and box grader never trained on (as aerial, robot or medical cameras show familiar
  classes): the class names fit the shipped models, what they see does not.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict

import numpy as np

import _harness as H
from _harness import bench_db
from _harness import finite as _f

H.one_thread_env()   # (as importing eval_judges for these did)

#: coco128's classes merged into names no COCO model uses (unlisted classes -> "gadget").
TAXONOMY = {
    "human": ["person"],
    "two_wheeler": ["bicycle", "motorcycle"],
    "road_vehicle": ["car", "truck", "bus", "train", "airplane", "boat"],
    "animal": ["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"],
    "food_item": ["banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
                  "pizza", "donut", "cake"],
    "tableware": ["bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl"],
    "furniture_piece": ["chair", "couch", "bed", "dining table", "bench", "toilet", "potted plant"],
}
OTHER = "gadget"
#: the TAXONOMY groups whose classes keep their COCO names in ``coco128-mixed``
MIXED_KEEP = ("human", "road_vehicle", "animal", "tableware")
#: COCO name -> PASCAL VOC's spelling (``coco128-voc``)
VOC_SPELLINGS = {"airplane": "aeroplane", "dining table": "diningtable", "motorcycle": "motorbike",
                 "potted plant": "pottedplant", "couch": "sofa", "tv": "tvmonitor"}


def load(name: str):
    """The dataset as a new user would load it (``ground_truth`` field)."""
    if name == "raccoon":
        return H.load("raccoon", "C-bench-raccoon")
    if name == "pennfudan":
        return H.load("pennfudan", "C-bench-pennfudan")
    if name == "coco128-voc":
        ds = H.load("coco128", "C-bench-coco128-voc")
        labels = ds.values("ground_truth.detections.label")
        ds.set_values("ground_truth.detections.label",
                      [[VOC_SPELLINGS.get(c, c) for c in (ls or [])] for ls in labels])
        ds.default_classes = sorted({VOC_SPELLINGS.get(c, c) for c in ds.default_classes})
        ds.classes = {}
        ds.save()
        return ds
    if name == "coco128-upside-down":
        return _upside_down(H.load("coco128", "C-bench-coco128-upside-down"))
    if name in ("coco128-custom", "coco128-mixed", "coco128-all-custom"):
        ds = H.load("coco128", f"C-bench-{name}")
        if name == "coco128-all-custom":   # + coco128-val's 128 images (report only)
            val = H.load("coco128-val", "C-bench-coco128-val-part")
            ds.add_samples(val)
            val.delete()
        keep = MIXED_KEEP if name == "coco128-mixed" else ()
        to = {c: (c if new in keep else new) for new, olds in TAXONOMY.items() for c in olds}
        labels = ds.values("ground_truth.detections.label")
        ds.set_values("ground_truth.detections.label",
                      [[to.get(c, OTHER) for c in (ls or [])] for ls in labels])
        ds.default_classes = sorted(set(to.values()) | {OTHER})
        ds.classes = {}
        ds.save()
        return ds
    raise ValueError(f"unknown dataset {name!r}")


def _upside_down(ds):
    """``ds`` with every image turned by 180 degrees (written under ``out/``) and its boxes
    turned with it."""
    import cv2

    out = H.REPO / "out" / "upside_down_images"
    out.mkdir(parents=True, exist_ok=True)
    paths, boxes = ds.values(["filepath", "ground_truth.detections.bounding_box"])
    new_paths = []
    for p in paths:
        dst = out / p.rsplit("/", 1)[-1]
        if not dst.exists():
            cv2.imwrite(str(dst), cv2.rotate(cv2.imread(p), cv2.ROTATE_180))
        new_paths.append(str(dst))
    ds.set_values("filepath", new_paths)
    ds.set_values("ground_truth.detections.bounding_box",
                  [[[1 - x - w, 1 - y - h, w, h] for x, y, w, h in (bs or [])] for bs in boxes])
    return ds


#: grade() progress callback recording each step's first and last call (shared with grade_speed)
_timed_progress = H.timed_progress


def run(name: str, args) -> dict:
    from grader.evaluate import evaluate_judges
    from grader.noise import DEFAULT_RATES, inject_errors
    from grader.pipeline import grade

    ds = load(name)
    classes = sorted(set(ds.distinct("ground_truth.detections.label")))
    print(f"\n#### {name}: {len(ds)} images, {ds.count('ground_truth.detections')} boxes, "
          f"classes {classes}")
    rates = {t: args.rate for t in DEFAULT_RATES}
    if len(classes) < 2:
        rates.pop("swap", None)       # one class: nothing to swap to
    acc = defaultdict(list)
    for r in range(args.repeats):
        seed = args.seed + r
        for f in list(ds.get_field_schema()):
            if f.startswith("noisy") or f == "lg_predictions":
                ds.delete_sample_field(f)
        rep = inject_errors(ds, "ground_truth", "noisy", rates=rates, seed=seed, overwrite=True)
        times: dict = {}
        t0 = time.time()
        g = grade(ds, gt_field="noisy", progress=_timed_progress(times), **args.grade_kw)
        wall = time.time() - t0
        print(f"-- seed {seed}: injected {rep.info['injected']}; grade() {wall:.1f} s; ran "
              f"{sorted(g.reports)}; not run {g.not_run}")
        print("   steps (s): " + ", ".join(f"{k} {v[1] - v[0]:.1f}" for k, v in times.items()))
        ens = g.reports.get("ensemble")
        if ens is not None:
            print("   ensemble: " + "; ".join(
                f"{i}={v.get('chosen')}{('/' + v['variant']) if v.get('variant') else ''}"
                for i, v in ens.info.get("learner", {}).items()))
            if ens.info.get("selection"):
                for issue, s in ens.info["selection"].items():
                    print(f"     {issue}: " + ", ".join(f"{k} {v:.3f}" for k, v in s.items()))
        res = evaluate_judges(ds, "noisy", pred_field=g.pred_field, exclude_tag=None)
        shipped = _shipped_model_auroc(ds)
        for err, rows in res["gt"].items():
            e = rows.get(f"ensemble:ensemble_{err}")
            singles = {n: v for n, v in rows.items() if not n.startswith("ensemble:")}
            if not singles:
                continue
            bn, bv = max(singles.items(), key=lambda kv: _f(kv[1]["auroc"])
                         if math.isfinite(_f(kv[1]["auroc"])) else -1)
            acc[err, "shipped_auroc"].append(shipped.get(err, float("nan")))
            acc[err, "ens_auroc"].append(_f(e["auroc"]) if e else float("nan"))
            acc[err, "ens_ap"].append(_f(e["ap"]) if e else float("nan"))
            acc[err, "ens_ece"].append(_f(e["ece"]) if e and "ece" in e else float("nan"))
            acc[err, "best_auroc"].append(_f(bv["auroc"]))
            acc[err, "best_ap"].append(max(_f(v["ap"]) for v in singles.values()))
            acc[err, "best_name"].append(bn)
        for n, row in res.get("overlooked", {}).items():
            acc["overlooked", n].append((row["recall@1xN"], row["recall@2xN"]))
        if name in ("coco128-mixed", "coco128-voc"):
            for key, v in _known_split(ds, name).items():
                acc[key].append(v)
        acc["time"].append(wall)
    print_table(name, acc, args)
    if not args.keep:
        ds.delete()
    return acc


def _known_split(ds, name: str) -> dict[tuple, tuple[float, float]]:
    """``ensemble_<err>`` AUROC and AP among boxes whose (noisy) label is a COCO class and among
    the others (own classes; for ``coco128-voc`` the VOC spellings): whether those boxes are
    ranked as well as COCO's."""
    from grader.evaluate import auroc, average_precision
    from grader.noise import CLEAN, TRUTH_ATTR
    from grader.scores import GT_ISSUES

    coco = ({c for grp in MIXED_KEEP for c in TAXONOMY[grp]} if name == "coco128-mixed" else
            {c for c in ds.distinct("noisy.detections.label") if c not in VOC_SPELLINGS.values()})
    lab, truth = (np.array(ds.values(f"noisy.detections.{a}", unwind=True), dtype=object)
                  for a in ("label", TRUTH_ATTR))
    truth = np.array([t if t is not None else CLEAN for t in truth], dtype=object)
    known = np.isin(lab, sorted(coco))
    out = {}
    for err in list(GT_ISSUES) + ["any"]:
        sc = np.array(ds.values(f"noisy.detections.ensemble_{err}", unwind=True), dtype=float)
        pos = (truth != CLEAN) if err == "any" else (truth == err)
        for part, m in (("known", known), ("unknown", ~known)):
            sel = m & (pos | (truth == CLEAN))
            if pos[sel].any() and (~pos[sel]).any():
                x = np.nan_to_num(sc[sel], nan=-1.0)
                out[err, part] = (auroc(pos[sel], x), average_precision(pos[sel], x),
                                  int(pos[sel].sum()))
    return out


def _shipped_model_auroc(ds) -> dict[str, float]:
    """AUROC per error type of the shipped default model applied as is (what grade() gave on
    these data before it checked whether the model fits them)."""
    from grader.ensemble_prior import default_model_scores, label_percentiles
    from grader.evaluate import auroc
    from grader.noise import CLEAN, TRUTH_ATTR
    from grader.scores import GT_ISSUES

    pct, ls = label_percentiles(ds, "noisy", truth_attr=TRUTH_ATTR, exclude_judges=["brain"])
    truth = np.array([t if t is not None else CLEAN for t in ls.truth], dtype=object)
    out = {}
    for err in list(GT_ISSUES) + ["any"]:
        got = default_model_scores(pct, err)
        pos = (truth != CLEAN) if err == "any" else (truth == err)
        sel = pos | (truth == CLEAN)
        if got is not None and pos.any():
            out[err] = auroc(pos[sel], np.nan_to_num(got[0][sel], nan=-1.0))
    return out


def print_table(name: str, acc: dict, args) -> None:
    from grader.scores import GT_ISSUES

    print(f"\n== {name}: AUROC (AP), all labels, mean over {args.repeats} seeds; ECE: of "
          "ensemble_* read as a probability (10 bins) ==")
    print(f"{'error':>10s} {'ensemble_*':>16s} {'best single':>16s} {'ens-best':>9s} "
          f"{'shipped model':>14s} {'ECE':>6s}  best single judge")
    for err in list(GT_ISSUES) + ["any"]:
        if (err, "ens_auroc") not in acc:
            continue
        m = lambda k: float(np.nanmean(acc[err, k]))
        bn = max(set(acc[err, "best_name"]), key=acc[err, "best_name"].count)
        print(f"{err:>10s} {m('ens_auroc'):7.3f} ({m('ens_ap'):.3f}) {m('best_auroc'):7.3f} "
              f"({m('best_ap'):.3f}) {m('ens_auroc') - m('best_auroc'):+9.3f} "
              f"{m('shipped_auroc'):14.3f} {m('ens_ece'):6.3f}  {bn}")
    for key, v in sorted((k, v) for k, v in acc.items() if k[0] == "overlooked"):
        print(H.recall_line(f"overlooked {key[1]:34s}", v, width=0))
    split = [(k, v) for k, v in acc.items() if len(k) == 2 and k[1] in ("known", "unknown")]
    if split:
        print("-- ensemble_* AUROC (AP) [errors per seed] by the label's class: COCO name "
              "(known) or the user's own (unknown), mean over seeds --")
        for err in list(GT_ISSUES) + ["any"]:
            cells = []
            for part in ("known", "unknown"):
                v = np.array(acc.get((err, part), []), dtype=float).reshape(-1, 3)
                cells.append(f"{part} {v[:, 0].mean():.3f} ({v[:, 1].mean():.3f}) "
                             f"[{v[:, 2].mean():.0f}]" if len(v) else f"{part} -")
            print(f"{err:>10s}   " + "   ".join(cells))
    print(f"grade() wall time: mean {np.mean(acc['time']):.1f} s over {len(acc['time'])} seeds "
          f"(the first includes the detector and any training)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", nargs="+", default=["raccoon", "coco128-custom"],
                    choices=["raccoon", "coco128-custom", "coco128-all-custom", "coco128-mixed",
                             "coco128-voc", "pennfudan",
                             "coco128-upside-down"])
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--grade-kw", type=json.loads, default={},
                    help='grade() options as JSON, e.g. \'{"finetune": {"epochs": 10}}\' (a '
                         'YOLOX-Nano fine-tuned on the classes, the default where none knows them; '
                         '{"finetune": false} runs the COCO detector instead)')
    args = ap.parse_args(argv)
    with bench_db():
        for name in args.data:
            run(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
