"""Does the ensemble hold at error rates other than the ~5 % it was fitted at?

    OMP_NUM_THREADS=1 .venv/bin/python bench/error_rates.py                       # coco128 (dev)
    OMP_NUM_THREADS=1 .venv/bin/python bench/error_rates.py --split val --rates 0.02 0.1

The shipped ensemble was fitted on coco128 with every error type injected at 3-10 % (~19 % of
the labels wrong). Real datasets hold fewer errors, a rushed one more. Per rate (every error
type at that rate, overlooked deletions too; one injection seed each, ``--seed + i``): copy the
ground truth into ``noisy`` with the errors, call ``grader.grade(ds, gt_field="noisy")`` with its
defaults (the detector's predictions computed once and reused), and print for each
``ensemble_<issue>`` and ``ensemble_any``, as ``grader.evaluate.evaluate_judges`` counts them
(errors of that type against clean labels): AUROC, AP, the expected calibration error, the mean
predicted probability and the observed share of errors (what a calibrated score's mean would
be). The best single judge per type sits beside them.

``--mix real``: the rate scales ``grader.noise.REAL_MIX_RATES`` instead (today's types plus the
real-looking ones: cross-class duplicates, split objects, merged neighbours, part-only boxes;
at ``--rates 0.05`` exactly that mix), and a second table gives, per injected kind
(``injected_kind``) against clean labels, the AUROC / AP of ``ensemble_any`` and of the
ensemble score of the issue the kind is recorded under.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import _harness as H
from _harness import bench_db, load_split

H.one_thread_env()

ISSUES = ("badloc", "swap", "spurious", "duplicate", "any")


def one_rate(ds, rate: float, seed: int, pred_field: str | None,
             mix: str = "uniform") -> tuple[dict, str | None]:
    """grade() at one injected rate; per issue the ensemble's figures and the best single's
    (``mix="real"``: also per injected kind, under ``"kinds"``)."""
    from grader.evaluate import auroc, average_precision, evaluate_judges, read_label_scores
    from grader.noise import KIND_ATTR, REAL_ERROR_TYPES, REAL_MIX_RATES, TRUTH_ATTR
    from grader.pipeline import grade

    for f in list(ds.get_field_schema()):   # a new user's field: no earlier run's candidates
        if f.startswith("noisy_") and f != "noisy_deleted":
            ds.delete_sample_field(f)
    if mix == "real":
        H.inject(ds, seed=seed, rates={k: v * rate / 0.05 for k, v in REAL_MIX_RATES.items()})
    else:
        H.inject(ds, seed=seed, rate=rate)
    t0 = time.time()
    g = grade(ds, gt_field="noisy", pred_field=pred_field)
    took = time.time() - t0
    res = evaluate_judges(ds, "noisy", pred_field=g.pred_field, exclude_tag=None)
    ls = read_label_scores(ds, "noisy", truth_attr=TRUTH_ATTR)
    truth = np.array([t if t is not None else "none" for t in ls.truth], dtype=object)
    out = {"_grade_s": took}
    for issue in ISSUES:
        rows = res["gt"].get(issue) or {}
        name = f"ensemble:ensemble_{issue}"
        if name not in rows:
            continue
        pos = (truth != "none") if issue == "any" else (truth == issue)
        sel = pos | (truth == "none")
        p = ls.columns[name][sel]
        singles = {k: r for k, r in rows.items() if not k.startswith("ensemble:")}
        best = max(singles, key=lambda k: H.finite(singles[k]["auroc"])) if singles else None
        out[issue] = {"auroc": rows[name]["auroc"], "ap": rows[name]["ap"],
                      "ece": rows[name].get("ece", float("nan")),
                      "mean_p": float(np.nanmean(p)), "observed": float(pos[sel].mean()),
                      "best": best, "best_auroc": singles[best]["auroc"] if best else float("nan")}
    if mix == "real":
        kind = np.array([k if k is not None else "none" for k in
                         [x for row in ds.values(f"noisy.detections.{KIND_ATTR}") for x in (row or [])]],
                        dtype=object)
        assert len(kind) == len(truth), "labels read in two orders"
        out["kinds"] = {}
        for k in sorted(set(kind) - {"none"}):
            pos = kind == k
            sel = pos | (truth == "none")
            issue = REAL_ERROR_TYPES.get(k, k)
            row = {"n": int(pos.sum()), "issue": issue}
            for name in ("ensemble_any", f"ensemble_{issue}"):
                col = ls.columns.get(f"ensemble:{name}")
                if col is not None:
                    s_ = np.nan_to_num(col[sel], nan=-1.0)
                    row[name] = (auroc(pos[sel], s_), average_precision(pos[sel], s_))
            out["kinds"][k] = row
    return out, g.pred_field


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["dev", "val"], default="dev")
    ap.add_argument("--rates", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.15, 0.25])
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--mix", choices=["uniform", "real"], default="uniform",
                    help="every error type at the rate, or REAL_MIX_RATES scaled to it")
    args = ap.parse_args(argv)
    t0 = time.time()
    with bench_db():
        ds = load_split(args.split)
        pred = None
        table = []   # (rate, figures); a rate may repeat (another seed)
        for i, rate in enumerate(args.rates):
            rows, pred = one_rate(ds, rate, args.seed + i, pred, args.mix)
            table.append((rate, rows))
            print(f"-- rate {rate:.2f} (seed {args.seed + i}): grade() {rows['_grade_s']:.1f} s",
                  flush=True)
    print(f"\n== {args.split}: ensemble per injected rate of each error type "
          f"(errors of the type against clean labels; one seed per rate) ==")
    print(f"{'rate':>5s} {'issue':10s} {'AUROC':>6s} {'AP':>6s} {'ECE':>6s} {'mean p':>7s} "
          f"{'observed':>8s}   best single (AUROC)")
    for rate, rows in table:
        for issue in ISSUES:
            r = rows.get(issue)
            if r is None:
                continue
            print(f"{rate:5.2f} {issue:10s} {r['auroc']:6.3f} {r['ap']:6.3f} {r['ece']:6.3f} "
                  f"{r['mean_p']:7.3f} {r['observed']:8.3f}   {r['best']} ({r['best_auroc']:.3f})")
    if args.mix == "real":
        print(f"\n== {args.split}: per injected kind against clean labels, AUROC / AP ==")
        print(f"{'rate':>5s} {'kind':16s} {'n':>4s} {'issue':10s} {'ensemble_any':>14s} {'ensemble_<issue>':>17s}")
        for rate, rows in table:
            for k, r in rows["kinds"].items():
                cell = lambda name: ("{:.3f} / {:.3f}".format(*r[name]) if name in r else "-")
                print(f"{rate:5.2f} {k:16s} {r['n']:4d} {r['issue']:10s} {cell('ensemble_any'):>14s} "
                      f"{cell('ensemble_' + r['issue']):>17s}")
    print(f"[{args.split}] wall time {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
