"""Evaluate every available judge, FiftyOne Brain and the ensemble on injected errors, in one command.

    .venv/bin/python bench/eval_judges.py                 # coco128 (development split)
    .venv/bin/python bench/eval_judges.py --split both    # + coco128-val as held-out evaluation

Per split: load the real dataset under ../shared/data, copy its ground truth into ``noisy``
with known errors (grader.noise), run the shared detector, cleanlab ObjectLab and Brain's
compute_mistakenness on the noisy labels, mark a random ``--trusted-fraction`` of the samples
``verified`` (their injected truth plays the reviewer's verdicts), fit the ensemble's weights on
them, then score every judge on the *other* samples and print the table, the ensemble-vs-best
comparison and the review-cost estimate.

ClipGrader and the VLM judge need pretrained weights that cannot be downloaded here; they are
reported as not available (``--device cuda`` is accepted for them when they can run).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

import fiftyone as fo  # noqa: E402

from grader import io  # noqa: E402
from grader.judges.cleanlab import run_cleanlab  # noqa: E402
from grader.detectors import run_detector  # noqa: E402
from grader.ensemble import compute_ensemble  # noqa: E402
from grader.evaluate import evaluate_judges, format_table, run_brain_mistakenness  # noqa: E402
from grader.noise import inject_errors  # noqa: E402
from grader.review_cost import estimate_review_cost, format_review_cost  # noqa: E402
from grader.scores import get_spec  # noqa: E402

DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))


def load_split(split: str) -> fo.Dataset:
    if split == "dev":
        root = DATA / "coco128"
        return io.load_coco(str(root / "images"), str(root / "labels.json"),
                            name="lg-bench-coco128", overwrite=True)
    root = DATA / "coco128-val"
    return io.load_yolo(str(root / "images"), str(root / "labels"), str(root / "classes.yaml"),
                        name="lg-bench-coco128-val", overwrite=True)


def ensemble_vs_best(result: dict) -> list[str]:
    """Per error type: the ensemble's AP/AUROC against the best single judge (not ensemble)."""
    lines = [f"{'error':10s} {'ensemble AP':>12s} {'best single (AP)':>36s} {'ens AUROC':>10s} "
             f"{'best AUROC':>11s}  beats both?"]
    for err, rows in result["gt"].items():
        ens = rows.get(f"ensemble:ensemble_{err}")
        singles = {k: v for k, v in rows.items() if not k.startswith("ensemble:")}
        if ens is None or not singles:
            continue
        best_name, best = max(singles.items(), key=lambda kv: _f(kv[1]["ap"]))
        best_auc = max(_f(v["auroc"]) for v in singles.values())
        beats = ens["ap"] > best["ap"] and ens["auroc"] > best_auc
        best_txt = "%s (%.3f)" % (best_name, best["ap"])
        lines.append(f"{err:10s} {ens['ap']:12.3f} {best_txt:>36s} {ens['auroc']:10.3f} "
                     f"{best_auc:11.3f}  {'yes' if beats else 'NO'}")
    return lines


def _f(x) -> float:
    return x if x is not None and math.isfinite(x) else -1.0


def mean_table(results: list[dict], title: str) -> list[str]:
    """Mean AP and AUROC over repeats per score and error type, and the ensemble's verdict."""
    errs = [e for e in ("badloc", "swap", "spurious", "any") if all(e in r["gt"] for r in results)]
    names = sorted({n for r in results for e in errs for n in r["gt"][e]})
    mean = {}
    for e in errs:
        for n in names:
            aps = [r["gt"][e][n]["ap"] for r in results if n in r["gt"][e]]
            aucs = [r["gt"][e][n]["auroc"] for r in results if n in r["gt"][e]]
            mean[e, n] = (float(np.nanmean(aps)), float(np.nanmean(aucs)))
    lines = [title, f"{'score':36s}" + "".join(f"{e + ' AP/AUROC':>20s}" for e in errs)]
    for n in names:
        lines.append(f"{n:36s}" + "".join(f"{mean[e, n][0]:14.3f}/{mean[e, n][1]:.3f}" for e in errs))
    verdict = []
    for e in errs:
        ens = mean.get((e, f"ensemble:ensemble_{e}"))
        singles = [(n, mean[e, n]) for n in names if not n.startswith("ensemble:")]
        if ens is None or not singles:
            continue
        best_ap = max(singles, key=lambda kv: kv[1][0])
        best_auc = max(singles, key=lambda kv: kv[1][1])
        ok = ens[0] > best_ap[1][0] and ens[1] > best_auc[1][1]
        covering = [n for n in names if not n.startswith("ensemble:")
                    and e in (get_spec(n.split(":", 1)[1]).issue, *get_spec(n.split(":", 1)[1]).also)]
        note = (f" [only {len(covering)} judge registered for {e}: {covering}]"
                if e != "any" and len(covering) <= 1 else "")
        verdict.append(f"  {e:9s} ensemble AP {ens[0]:.3f} vs best {best_ap[0]} {best_ap[1][0]:.3f}; "
                       f"AUROC {ens[1]:.3f} vs best {best_auc[0]} {best_auc[1][1]:.3f} -> "
                       f"{'ensemble beats every single judge' if ok else 'ensemble does NOT beat every single judge'}"
                       + note)
    lines.append("verdict (means over repeats):")
    return lines + verdict


def run_clipgrader(ds, args) -> None:
    """ClipGrader on the noisy labels (only when weights were given)."""
    from grader.judges.clipgrader.grade import grade_clipgrader
    from grader.judges.clipgrader.model import TINY_MODEL, register_tiny_config

    if args.clipgrader_checkpoint:
        rep = grade_clipgrader(ds, "noisy", checkpoint=args.clipgrader_checkpoint, device=args.device)
    else:
        if args.clipgrader_model == TINY_MODEL:
            register_tiny_config()
        pre = None if args.clipgrader_pretrained in (None, "", "none") else args.clipgrader_pretrained
        rep = grade_clipgrader(ds, "noisy", model_name=args.clipgrader_model, pretrained=pre,
                               device=args.device)
    print(f"   clipgrader: {rep.labels_scored} labels scored, skipped {dict(rep.skipped)}")


def run_vlm(ds, args) -> None:
    """VLM judge on the noisy labels (only when a model was given)."""
    from grader.judges.vlm import make_backend, run_vlm_judge

    kwargs = {"base_url": args.vlm_base_url} if (args.vlm_base_url and args.vlm_backend == "openai") else {}
    backend = make_backend(args.vlm_backend, args.vlm_model, **kwargs)
    rep = run_vlm_judge(ds, backend, label_field="noisy")
    print(f"   vlm: {rep.labels_scored} labels scored, skipped {dict(rep.skipped)}")


def run_split(split: str, args) -> dict:
    t0 = time.time()
    ds = load_split(split)
    det = run_detector(ds, model=args.detector, label_field="predictions")
    print(f"\n#### split={split}: {len(ds)} images; detector {args.detector}: "
          f"{ds.count('predictions.detections')} predictions (skipped: {dict(det.skipped)})")
    use_clip = bool(args.clipgrader_checkpoint or args.clipgrader_model)
    if use_clip:
        src = args.clipgrader_checkpoint or f"{args.clipgrader_model} / {args.clipgrader_pretrained}"
        note = ("  (random weights: plumbing check only, scores meaningless)"
                if args.clipgrader_model == "lg-tiny-clip" else "")
        print(f"clipgrader: {src} on {args.device}{note}")
    else:
        print("clipgrader: not available: no pretrained weights offline "
              "(give --clipgrader-checkpoint or --clipgrader-model/--clipgrader-pretrained)")
    if args.vlm_model:
        print(f"vlm: {args.vlm_backend} {args.vlm_model}")
    else:
        print("vlm: not available: no pretrained weights offline (give --vlm-backend/--vlm-model)")
    rates = {"badloc": args.rate, "swap": args.rate, "overlooked": args.rate, "spurious": args.rate}
    all_res, overlap_res, costs = [], [], []
    ids = ds.values("id")
    for r in range(args.repeats):
        seed = args.seed + r
        rep = inject_errors(ds, "ground_truth", "noisy", rates=rates, seed=seed, overwrite=True,
                            badloc_iou=(args.badloc_iou_min, args.badloc_iou_max), swap_to=args.swap_to)
        cl = run_cleanlab(ds, "noisy", "predictions", high_probability_threshold=args.cl_high,
                          low_probability_threshold=args.cl_low)
        run_brain_mistakenness(ds, "noisy", "predictions")
        if use_clip:
            run_clipgrader(ds, args)
        if args.vlm_model:
            run_vlm(ds, args)
        rng = np.random.default_rng(seed + 1000)
        ds.untag_samples("verified")
        n_trusted = int(round(args.trusted_fraction * len(ids)))
        ds.select([ids[i] for i in rng.choice(len(ids), n_trusted, replace=False)]).tag_samples("verified")
        ens = compute_ensemble(ds, "noisy", truth="injected_error", sharpness=args.sharpness,
                               prior_strength=args.prior_strength, method=args.method)
        res = evaluate_judges(ds, "noisy", pred_field="predictions", exclude_tag="verified", k=args.k)
        ovl = evaluate_judges(ds, "noisy", pred_field="predictions", exclude_tag="verified", k=args.k,
                              only_scored_by=["brain:mistakenness"])
        rc = estimate_review_cost(ds, "noisy", "ensemble_any", exclude_tag="verified")
        all_res.append(res)
        overlap_res.append(ovl)
        costs.append(rc)
        print(f"\n-- repeat {r} (seed {seed}): injected {rep.info['injected']} on "
              f"{rep.info['eligible_boxes']} boxes; cleanlab scored {cl.labels_scored}; "
              f"trusted samples {ens.info['trusted_samples']}")
        for issue, w in ens.info["weights"].items():
            print(f"   weights[{issue}] ({ens.info['weights_source'][issue]}) = " + ", ".join(
                f"{k}={v:.3f}" for k, v in sorted(w.items(), key=lambda kv: -kv[1])))
        if r == 0:
            print()
            print(format_table(res, title=f"== {split}, seed {seed}: judges vs injected errors "
                                          f"(trusted samples excluded) =="))
            print()
            print(format_review_cost(rc))
        print("   all labels:")
        print("\n".join("   " + x for x in ensemble_vs_best(res)))
        print("   labels every judge scored (GT box matched to a prediction):")
        print("\n".join("   " + x for x in ensemble_vs_best(ovl)))

    print()
    print("\n".join(mean_table(all_res, f"== {split}: mean over {args.repeats} repeats, all labels ==")))
    print()
    print("\n".join(mean_table(overlap_res, f"== {split}: mean over {args.repeats} repeats, labels "
                                            f"every judge scored (matched to a prediction) ==")))
    n_ovl = np.mean([sum(o["counts"][e] for e in ("badloc", "swap", "spurious")) for o in overlap_res])
    print(f"   (errors per repeat in this subset: {n_ovl:.1f})")
    b10 = [next(b for b in c["budgets"] if b["budget"] == 0.1) for c in costs]
    print(f"\nreview 10% of labels in ensemble_any order: {np.mean([b['found_ranked'] for b in b10]):.1f} "
          f"errors found vs {np.mean([b['found_random'] for b in b10]):.1f} at random "
          f"(of {np.mean([c['n_errors'] for c in costs]):.1f}; mean over repeats)")
    print(f"[{split}] wall time {time.time() - t0:.1f} s")
    if args.keep:
        ds.persistent = True
    else:
        ds.delete()
    return {"all": all_res, "overlap": overlap_res, "review_cost": costs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["dev", "val", "both"], default="dev")
    ap.add_argument("--rate", type=float, default=0.05, help="rate of each error type")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="injection seeds (seed, seed+1, ...)")
    ap.add_argument("--badloc-iou-min", type=float, default=0.3)
    ap.add_argument("--badloc-iou-max", type=float, default=0.6)
    ap.add_argument("--swap-to", choices=["uniform", "confusable"], default="uniform")
    ap.add_argument("--detector", default="yolo-fastestv2",
                    help="chosen on coco128 (dev): more true positives than yolov3-tiny")
    # cleanlab's defaults (0.95 / 0.5) leave the weak shared detectors silent (every score 1.0);
    # these were chosen on coco128 (dev) only.
    ap.add_argument("--cl-high", type=float, default=0.1, help="cleanlab high_probability_threshold")
    ap.add_argument("--cl-low", type=float, default=0.05, help="cleanlab low_probability_threshold")
    ap.add_argument("--trusted-fraction", type=float, default=0.2)
    ap.add_argument("--sharpness", type=float, default=2.0)
    ap.add_argument("--prior-strength", type=float, default=10.0)
    ap.add_argument("--method", choices=["mean", "stouffer"], default="stouffer")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--device", default="cpu", help="for GPU-capable judges (ClipGrader/VLM)")
    ap.add_argument("--clipgrader-checkpoint", default=None, help="a trained ClipGrader checkpoint")
    ap.add_argument("--clipgrader-model", default=None,
                    help="open_clip model name (zero-shot); 'lg-tiny-clip' = random tiny model")
    ap.add_argument("--clipgrader-pretrained", default=None, help="open_clip tag or local weights file")
    ap.add_argument("--vlm-backend", choices=["transformers", "openai"], default="transformers")
    ap.add_argument("--vlm-model", default=None, help="HF id / local dir, or the served model name")
    ap.add_argument("--vlm-base-url", default=None, help="OpenAI-compatible endpoint (openai backend)")
    ap.add_argument("--keep", action="store_true", help="keep the bench datasets")
    args = ap.parse_args(argv)
    if not (DATA / "coco128").exists():
        print(f"no data under {DATA}; set LABEL_GRADER_DATA")
        return 1
    splits = ["dev", "val"] if args.split == "both" else [args.split]
    for s in splits:
        run_split(s, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
