"""Evaluate every judge, FiftyOne Brain and the ensembles on injected errors, as a new user would.

    .venv/bin/python bench/eval_judges.py                          # coco128 (development split)
    .venv/bin/python bench/eval_judges.py --split both --repeats 5  # + coco128-val (held out)

Per split and seed: load the real dataset under ../shared/data, copy its ground truth into
``noisy`` with ~5% of each error type (badloc, swap, spurious, duplicate, overlooked; the truth
is recorded), then call the public one-call API ``grader.grade(ds, gt_field="noisy")`` with its
defaults (the default detector, every judge that can run, the consistency judge, the default
ensemble). The detector's predictions are computed once per split and reused for later seeds
(they do not depend on the labels). FiftyOne Brain's ``compute_mistakenness`` runs beside it
as the baseline (it is not an ensemble input).

Reported, per error type: AP and AUROC of every registered score present (all labels; mean over
seeds), overlooked recall at N = 1x and 2x the number of deleted boxes with the ceiling (share
of deleted boxes any prediction covers), and the ensembles: a random 10% / 20% of the images
are marked ``verified`` (their injected truth plays the reviewer's verdicts), the vote and the
learned ensemble (``learner="auto"``) are fitted on them and scored, with every single judge,
on the *other* images.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict

import numpy as np

import _harness as H  # (sys.path, environment)

# After numpy, as before the harness: numpy's BLAS keeps its threads, torch and OpenMP get one.
H.one_thread_env()

# the harness's, still importable from here (scripts outside bench/ imported them from eval_judges)
from _harness import DATA, REPO, bench_db, load_split  # noqa: E402,F401
from _harness import finite as _f  # noqa: E402


def _single(name: str) -> bool:
    return not name.startswith("ensemble:")


def run_split(split: str, args) -> dict:
    from grader.ensemble import compute_ensemble
    from grader.evaluate import evaluate_judges, run_brain_mistakenness
    from grader.pipeline import DEFAULT_PRED_FIELD, grade
    from grader.noise import ERROR_TYPES, inject_errors

    t0 = time.time()
    ds = load_split(split)
    print(f"\n#### split={split}: {len(ds)} images, {ds.count('ground_truth.detections')} boxes; "
          f"{args.repeats} seeds from {args.seed}; swap_to={args.swap_to}; cleanlab overrides "
          f"high={args.cl_high} low={args.cl_low}")
    rates = {t: args.rate for t in ERROR_TYPES}
    pred_field = None
    singles = defaultdict(list)          # (err, score) -> [(ap, auroc)] over seeds, all labels
    eces = defaultdict(list)             # (err, ensemble score) -> [expected calibration error]
    fusion = defaultdict(list)           # (err, "fused"/"not fused") -> [(ap, auroc)]
    overlooked = defaultdict(list)       # score -> [(r1, r2, ceiling)]
    ens = defaultdict(list)              # (frac, err, kind) -> [auroc]; kind: vote/learned/best
    ens_ap = defaultdict(list)
    chosen = defaultdict(lambda: defaultdict(int))
    t_grade = []
    for r in range(args.repeats):
        seed = args.seed + r
        # A fresh noisy field per seed: drop the previous seed's derived fields (candidates of
        # overlooked objects) as a new user's dataset would not have them.
        for f in list(ds.get_field_schema()):
            if f.startswith("noisy_") and f != "noisy_deleted":
                ds.delete_sample_field(f)
        rep = inject_errors(ds, "ground_truth", "noisy", rates=rates, seed=seed, overwrite=True,
                            swap_to=args.swap_to)
        t1 = time.time()
        opts = {"detector": args.detector} if args.detector else {}
        if args.cl_high is not None or args.cl_low is not None:
            opts["cleanlab"] = {k: v for k, v in (("high_probability_threshold", args.cl_high),
                                                  ("low_probability_threshold", args.cl_low))
                                if v is not None}
        g = grade(ds, gt_field="noisy", pred_field=pred_field, **opts)
        t_grade.append(time.time() - t1)
        if pred_field is None:
            pred_field = g.pred_field or DEFAULT_PRED_FIELD
            print(f"detector -> '{pred_field}': {ds.count(pred_field + '.detections')} predictions "
                  f"(first grade() incl. detector: {t_grade[-1]:.1f} s)")
        print(f"-- seed {seed}: grade() {t_grade[-1]:.1f} s; injected {rep.info['injected']}; grade() ran "
              f"{sorted(g.reports)}; not run {g.not_run}")
        run_brain_mistakenness(ds, "noisy", pred_field)
        res = evaluate_judges(ds, "noisy", pred_field=pred_field, exclude_tag=None)
        if args.fusion_check:
            # The same scores without the cross-class duplicate fusion: what it costs or gains
            # on injected errors.
            variants = [("default", res)]
            for tag, fuse in (("not fused", False), ("fused x>0", 1e-9)):
                compute_ensemble(ds, "noisy", exclude_judges=["brain"], pred_field=pred_field,
                                 fuse_cross_duplicates=fuse)
                variants.append((tag, evaluate_judges(ds, "noisy", pred_field=pred_field,
                                                      exclude_tag=None)))
            for err in ("duplicate", "any"):
                for tag, rr in variants:
                    row = rr["gt"].get(err, {}).get(f"ensemble:ensemble_{err}")
                    if row:
                        fusion[err, tag].append((_f(row["ap"]), _f(row["auroc"])))
            compute_ensemble(ds, "noisy", exclude_judges=["brain"], pred_field=pred_field)
        for err, rows in res["gt"].items():
            for name, row in rows.items():
                singles[err, name].append((_f(row["ap"]), _f(row["auroc"])))
                if "ece" in row:
                    eces[err, name].append(_f(row["ece"]))
        ceiling = res.get("overlooked_ceiling", float("nan"))
        for name, row in res["overlooked"].items():
            overlooked[name].append((row["recall@1xN"], row["recall@2xN"], ceiling))
        if args.selfsup:
            # No verified images: grade()'s default ensemble (above, in res) vs the stacker
            # fitted on errors injected into a copy of the noisy labels.
            t2 = time.time()
            er = compute_ensemble(ds, "noisy", truth="injected_error", learner="self",
                                  pred_field=pred_field, exclude_judges=["brain"], seed=seed + 500)
            t_self = time.time() - t2
            rs = evaluate_judges(ds, "noisy", pred_field=pred_field, exclude_tag=None)
            for err, rows in rs["gt"].items():
                if f"ensemble:ensemble_{err}" in rows:
                    ens[0.0, err, "self"].append(_f(rows[f"ensemble:ensemble_{err}"]["auroc"]))
                    ens_ap[0.0, err, "self"].append(_f(rows[f"ensemble:ensemble_{err}"]["ap"]))
                    ens[0.0, err, "vote"].append(_f(res["gt"][err][f"ensemble:ensemble_{err}"]["auroc"]))
                    ens_ap[0.0, err, "vote"].append(_f(res["gt"][err][f"ensemble:ensemble_{err}"]["ap"]))
            print(f"   self-supervised ensemble fitted in {t_self:.1f} s: " + ", ".join(
                f"{i}={v['chosen']}" for i, v in er.info["learner"].items()))
        ids = ds.values("id")
        for frac in args.verified:
            rng = np.random.default_rng(seed + 1000 + int(frac * 100))
            ds.untag_samples("verified")
            n_v = int(round(frac * len(ids)))
            ds.select([ids[i] for i in rng.choice(len(ids), n_v, replace=False)]).tag_samples("verified")
            # "default": the shipped model alone (the verified labels unused), the baseline a
            # learner fitted on them must beat; extra --min-gain values: "learned@<gain>".
            kinds = [("vote", "vote", {}), ("default", "auto", {"min_stack_positives": 10 ** 9}),
                     ("learned", "auto", {"min_gain": args.min_gain[0]})]
            kinds += [(f"learned@{g}", "auto", {"min_gain": g}) for g in args.min_gain[1:]]
            for kind, learner, kw in kinds:
                er = compute_ensemble(ds, "noisy", truth="injected_error", learner=learner,
                                      exclude_judges=["brain"], seed=seed, **kw)
                rv = evaluate_judges(ds, "noisy", pred_field=pred_field, exclude_tag="verified")
                for err, rows in rv["gt"].items():
                    e = rows.get(f"ensemble:ensemble_{err}")
                    if e is None:
                        continue
                    ens[frac, err, kind].append(_f(e["auroc"]))
                    ens_ap[frac, err, kind].append(_f(e["ap"]))
                    if kind == "vote":
                        # Best single judge (not Brain: it is the baseline, not an input) on the
                        # same labels.
                        cands = {n: v for n, v in rows.items()
                                 if _single(n) and not n.startswith("brain:")}
                        bn, bv = max(cands.items(), key=lambda kv: _f(kv[1]["auroc"]) if
                                     math.isfinite(_f(kv[1]["auroc"])) else -1)
                        ens[frac, err, "best"].append(_f(bv["auroc"]))
                        ens_ap[frac, err, "best"].append(max(_f(v["ap"]) for v in cands.values()))
                        ens[frac, err, "best_name"].append(bn)
                if kind == "learned":
                    for issue, info in er.info["learner"].items():
                        chosen[frac, issue][info["chosen"]] += 1
        ds.untag_samples("verified")
        out = {"singles": singles, "eces": eces, "fusion": fusion, "overlooked": overlooked, "ens": ens, "ens_ap": ens_ap,
               "chosen": chosen, "t_grade": t_grade}
        # Tables after every seed (means so far), so a long run leaves usable figures.
        print_split(split, args, out, n_done=r + 1)
        sys.stdout.flush()
    print(f"[{split}] wall time {time.time() - t0:.1f} s; grade() per seed after the first "
          f"(detector cached): {np.mean(t_grade[1:]) if len(t_grade) > 1 else float('nan'):.1f} s")
    if not args.keep:
        ds.delete()
    return out


def print_split(split: str, args, out: dict, n_done: int | None = None) -> None:
    from grader.scores import GT_ISSUES

    errs = list(GT_ISSUES) + ["any"]
    singles = out["singles"]
    names = sorted({n for (_, n) in singles})
    n_done = n_done or args.repeats
    print(f"\n== {split}: AP / AUROC per error type, all labels, mean over {n_done} seeds "
          f"({args.seed}..{args.seed + n_done - 1}) ==")
    print(f"{'score':38s}" + "".join(f"{e:>16s}" for e in errs))
    for n in names:
        cells = []
        for e in errs:
            v = singles.get((e, n))
            cells.append(f"{np.nanmean([a for a, _ in v]):7.3f}/{np.nanmean([b for _, b in v]):.3f}"
                         if v else f"{'-':>15s}")
        print(f"{n:38s}" + "".join(f"{c:>16s}" for c in cells))
    if out.get("eces"):
        print(f"\n== {split}: expected calibration error of the ensemble's scores read as "
              f"probabilities (10 bins, all labels; mean over seeds) ==")
        for (e, n), v in sorted(out["eces"].items()):
            if n == f"ensemble:ensemble_{e}":   # each score against its own issue
                print(f"{n:38s} {e:>10s} ECE {np.nanmean(v):.3f}")
    if out.get("fusion"):
        print(f"\n== {split}: ensemble with / without the cross-class duplicate fusion "
              f"(AP / AUROC, mean over seeds) ==")
        for (e, tag), v in sorted(out["fusion"].items()):
            a = np.array(v)
            print(f"ensemble_{e:10s} {tag:>10s} {a[:, 0].mean():.3f} / {a[:, 1].mean():.3f}")
    print(f"\n== {split}: overlooked (deleted boxes), mean over seeds ==")
    for n, v in sorted(out["overlooked"].items()):
        print(H.recall_line(n, v))
    print(f"\n== {split}: ensembles on the non-verified images (AUROC; AP in brackets), mean over seeds ==")
    print(f"{'verified':>9s} {'error':>10s} {'vote':>15s} {'learned':>15s} {'best single':>15s}  "
          f"{'learned-best':>12s} {'learned-vote':>12s} {'default model':>15s} {'learned-default':>15s}"
          f"  best single judge (most often)")
    ens, ap = out["ens"], out["ens_ap"]
    kinds = ("vote", "learned", "best", "default")
    for frac in args.verified:
        for e in errs:
            if (frac, e, "vote") not in ens:
                continue
            m = {k: float(np.nanmean(ens[frac, e, k])) for k in kinds}
            a = {k: float(np.nanmean(ap[frac, e, k])) for k in kinds}
            bn = max(set(ens[frac, e, "best_name"]), key=ens[frac, e, "best_name"].count)
            print(f"{int(frac * 100):>8d}% {e:>10s} " + " ".join(
                f"{m[k]:7.3f} ({a[k]:.3f})" for k in ("vote", "learned", "best"))
                + f"  {m['learned'] - m['best']:+12.3f} {m['learned'] - m['vote']:+12.3f}"
                + f" {m['default']:7.3f} ({a['default']:.3f}) {m['learned'] - m['default']:+15.3f}  {bn}")
    extra = sorted({k for (_, _, k) in ens if str(k).startswith("learned@")})
    if extra:
        print(f"\n== {split}: the learner at other --min-gain values (AUROC (AP), non-verified) ==")
        for frac in args.verified:
            for e in errs:
                if (frac, e, "vote") in ens:
                    print(f"{int(frac * 100):>8d}% {e:>10s} " + "  ".join(
                        f"{k} {np.nanmean(ens[frac, e, k]):.3f} ({np.nanmean(ap[frac, e, k]):.3f})"
                        for k in ["learned", *extra]))
    if (0.0, "any", "self") in ens:
        print(f"\n== {split}: no verified images: grade()'s default vote vs the self-supervised "
              f"stacker (all labels; AUROC (AP)) ==")
        for e in errs:
            if (0.0, e, "self") in ens:
                v, sf = np.nanmean(ens[0.0, e, "vote"]), np.nanmean(ens[0.0, e, "self"])
                print(f"{e:>10s} vote {v:.3f} ({np.nanmean(ap[0.0, e, 'vote']):.3f})  self {sf:.3f} "
                      f"({np.nanmean(ap[0.0, e, 'self']):.3f})  self-vote {sf - v:+.3f}")
    print("learner chosen (counts over seeds): " + "; ".join(
        f"{int(f * 100)}% {i}: {dict(c)}" for (f, i), c in sorted(out["chosen"].items())))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["dev", "val", "both"], default="dev")
    ap.add_argument("--rate", type=float, default=0.05, help="rate of each error type")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="injection seeds (seed, seed+1, ...)")
    ap.add_argument("--verified", type=float, nargs="+", default=[0.1, 0.2],
                    help="fractions of images marked verified for the ensembles")
    ap.add_argument("--selfsup", action="store_true",
                    help="also measure the self-supervised stacker (no verified images)")
    ap.add_argument("--swap-to", choices=["uniform", "confusable"], default="uniform")
    ap.add_argument("--cl-high", type=float, default=None,
                    help="override grade()'s cleanlab high_probability_threshold")
    ap.add_argument("--cl-low", type=float, default=None,
                    help="override grade()'s cleanlab low_probability_threshold")
    ap.add_argument("--detector", default=None, help="override grade()'s default detector")
    ap.add_argument("--keep", action="store_true", help="keep the bench datasets")
    ap.add_argument("--fusion-check", action="store_true",
                    help="also score the ensemble without the cross-class duplicate fusion")
    ap.add_argument("--min-gain", type=float, nargs="+", default=None,
                    help="the learner's margin over the default model (grader.ensemble."
                         "MIN_GAIN_OVER_DEFAULT); more values are compared in an extra table")
    args = ap.parse_args(argv)
    if not (DATA / "coco128").exists():
        print(f"no data under {DATA}; set LABEL_GRADER_DATA")
        return 1
    with bench_db():
        if args.min_gain is None:  # (imported only now: fiftyone must see the bench's database)
            from grader.ensemble import MIN_GAIN_OVER_DEFAULT

            args.min_gain = [MIN_GAIN_OVER_DEFAULT]
        for s in (["dev", "val"] if args.split == "both" else [args.split]):
            run_split(s, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
