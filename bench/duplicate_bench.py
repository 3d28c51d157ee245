"""Which evidence tells an injected duplicate from its source: ``consistency_duplicate`` per variant.

    OMP_NUM_THREADS=1 .venv/bin/python bench/duplicate_bench.py --split dev --repeats 5
    OMP_NUM_THREADS=1 .venv/bin/python bench/duplicate_bench.py --split val --repeats 5
    OMP_NUM_THREADS=1 .venv/bin/python bench/duplicate_bench.py --repeats 1 --variants all@0.03 --cross-duplicates 0.03

Per seed: inject errors into the split's ground truth as ``bench/eval_judges.py`` does (~5% of
every error type, or ``--only-duplicates`` at 8%), run ``grader.grade()`` once with its defaults
(the detector's predictions are cached across seeds), then re-run only ``run_consistency`` with
each evidence variant (and the default ensemble after it, not refitted) and score the duplicates
against every other label. The injector inserts a copy at a random place of the image's list, so
the list-order fallback (no evidence) is a coin flip; ``--shuffle`` also shuffles every image's
list before the variants run. Per variant, besides AP/AUROC: ``pair acc`` = share of
(copy, source) pairs where the copy scores higher, ``by evidence`` = share of those pairs decided
by the evidence (both boxes carry it and it differs) rather than by list order. Variants: a rule
of ``EVIDENCE_RULES`` or one score attribute; ``rule@m`` = soft split with ``evidence_margin=m``.
"""
from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

import _harness as H
from _harness import bench_db, load_split

H.one_thread_env()   # (as importing eval_judges for these did)

# A rule of EVIDENCE_RULES or one score attribute; "@m": soft split with evidence_margin m.
VARIANTS = ("none", "all", "badloc", "badloc_also", "covers_badloc", "zoom_iou", "zoom_badloc",
            "boxgrader_p_bad", "cleanlab_badloc", "all@0.03", "all@0.1", "all@0.3", "badloc@0.03",
            "badloc@0.1", "badloc@0.3")


def _shuffle_field(ds, field: str, seed: int) -> None:
    """Permute every image's detections (ids, boxes and attributes kept), in one bulk write."""
    rng = np.random.default_rng(seed)
    vals = ds.values(field)
    for v in vals:
        if v is not None and len(v.detections) > 1:
            v.detections = [v.detections[i] for i in rng.permutation(len(v.detections))]
    ds.set_values(field, vals)


def _measure_cross(ds) -> dict:
    """Injected cross-class duplicates (``injected_kind == "cross_duplicate"``) against every
    other label: AP/AUROC of ``consistency_xdup``, ``consistency_duplicate`` and
    ``ensemble_duplicate``, and the share of (copy, source) pairs where the copy's xdup is
    higher (class evidence picked the copy)."""
    from grader.evaluate import auroc, average_precision
    from grader.noise import KIND_ATTR

    ids, kind, src, xdup, dup, ens = ds.values(
        ["noisy.detections.id", f"noisy.detections.{KIND_ATTR}", "noisy.detections.injected_source",
         "noisy.detections.consistency_xdup", "noisy.detections.consistency_duplicate",
         "noisy.detections.ensemble_duplicate"], unwind=True)
    f = lambda xs: np.array([np.nan if x is None else float(x) for x in xs])
    xdup, dup, ens = f(xdup), f(dup), f(ens)
    y = np.array([k == "cross_duplicate" for k in kind])
    by_id = dict(zip(ids, xdup))
    acc = [d > by_id[s] for d, s in zip(xdup[y], np.array(src, dtype=object)[y])
           if s in by_id and d != by_id[s]]
    return {"n": int(y.sum()), "xdup_ap": average_precision(y, xdup), "xdup_auroc": auroc(y, xdup),
            "dup_ap": average_precision(y, dup), "ens_ap": average_precision(y, ens),
            "ens_auroc": auroc(y, ens), "pair_acc": float(np.mean(acc)) if acc else np.nan}


def _measure(ds) -> dict:
    from grader.evaluate import auroc, average_precision
    from grader.noise import TRUTH_ATTR

    ids, truth, src, dup, ens = ds.values(
        ["noisy.detections.id", f"noisy.detections.{TRUTH_ATTR}", "noisy.detections.injected_source",
         "noisy.detections.consistency_duplicate", "noisy.detections.ensemble_duplicate"],
        unwind=True)
    f = lambda xs: np.array([np.nan if x is None else float(x) for x in xs])
    dup, ens = f(dup), f(ens)
    y = np.array([t == "duplicate" for t in truth])
    by_id = dict(zip(ids, dup))
    acc, decided = [], []
    for d, s in zip(dup[y], np.array(src, dtype=object)[y]):
        ds_ = by_id.get(s)
        if ds_ is None or not np.isfinite(ds_):
            continue
        acc.append(d > ds_)
        lo, hi = sorted((d, ds_))
        # List order leaves the pair tied but for 1e-3; evidence splits it otherwise.
        decided.append(hi > lo and abs(hi - lo - 1e-3) > 1e-9)
    return {"ap": average_precision(y, dup), "auroc": auroc(y, dup),
            "ens_ap": average_precision(y, ens), "ens_auroc": auroc(y, ens),
            "pair_acc": float(np.mean(acc)) if acc else np.nan,
            "by_evidence": float(np.mean(decided)) if decided else np.nan, "n": int(y.sum())}


def run_variant(ds, variant: str) -> dict:
    from grader.ensemble import compute_ensemble
    from grader.judges.consistency import EVIDENCE_RULES, run_consistency

    name, _, margin = variant.partition("@")
    if name == "none":
        run_consistency(ds, "noisy", use_evidence=False)
    else:
        run_consistency(ds, "noisy", evidence=name if name in EVIDENCE_RULES else [name],
                        evidence_margin=float(margin or 0))
    compute_ensemble(ds, "noisy")        # grade()'s default: the shipped model, not refitted
    return _measure(ds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["dev", "val"], default="dev")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only-duplicates", action="store_true", help="inject duplicates only (8%%)")
    ap.add_argument("--shuffle", action="store_true", help="also measure with shuffled lists")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--cross-duplicates", type=float, default=0.0, metavar="RATE",
                    help="also inject cross-class duplicates (grader.noise 'cross_duplicate') at "
                         "RATE and score consistency_xdup on them after grade()")
    args = ap.parse_args(argv)
    with bench_db():
        from grader.noise import ERROR_TYPES, inject_errors
        from grader.pipeline import DEFAULT_PRED_FIELD, grade

        ds = load_split(args.split)
        rates = {"duplicate": 0.08} if args.only_duplicates else {t: 0.05 for t in ERROR_TYPES}
        if args.cross_duplicates:
            rates["cross_duplicate"] = args.cross_duplicates
        orders = ("as injected", "shuffled") if args.shuffle else ("as injected",)
        res = defaultdict(list)
        pred_field = None
        for r in range(args.repeats):
            seed = args.seed + r
            for fld in list(ds.get_field_schema()):
                if fld.startswith("noisy_") and fld != "noisy_deleted":
                    ds.delete_sample_field(fld)
            inject_errors(ds, "ground_truth", "noisy", rates=rates, seed=seed, overwrite=True)
            t0 = time.time()
            g = grade(ds, gt_field="noisy", pred_field=pred_field)
            pred_field = pred_field or g.pred_field or DEFAULT_PRED_FIELD
            print(f"-- seed {seed}: grade() {time.time() - t0:.1f} s", flush=True)
            if args.cross_duplicates:
                c = _measure_cross(ds)
                res["cross", "grade() defaults"].append(c)
                print(f"   cross-class duplicates (n={c['n']}): consistency_xdup AP {c['xdup_ap']:.3f} "
                      f"AUROC {c['xdup_auroc']:.3f}, copy above its source {c['pair_acc']:.2f} | "
                      f"consistency_duplicate AP {c['dup_ap']:.3f} | ensemble_duplicate AP "
                      f"{c['ens_ap']:.3f} AUROC {c['ens_auroc']:.3f}", flush=True)
            for order in orders:
                if order == "shuffled":
                    _shuffle_field(ds, "noisy", seed + 77)
                for v in args.variants:
                    m = run_variant(ds, v)
                    res[order, v].append(m)
                    print(f"   {order:12s} {v:16s} AP {m['ap']:.3f} AUROC {m['auroc']:.3f} "
                          f"pair acc {m['pair_acc']:.3f} by evidence {m['by_evidence']:.2f} | "
                          f"ensemble_duplicate AP {m['ens_ap']:.3f} AUROC {m['ens_auroc']:.3f} "
                          f"(n={m['n']})", flush=True)
        print(f"\n== {args.split}: consistency_duplicate per evidence variant, mean over "
              f"{args.repeats} seeds ({args.seed}..{args.seed + args.repeats - 1}), "
              f"{'duplicates only 8%' if args.only_duplicates else 'all error types 5%'} ==")
        print(f"{'order':12s} {'variant':16s} {'AP':>6s} {'AUROC':>6s} {'pair acc':>9s} "
              f"{'by evid.':>9s} {'ens AP':>7s} {'ens AUROC':>9s}")
        for (order, v), ms in res.items():
            m = {k: np.nanmean([x[k] for x in ms]) for k in ms[0]}
            if order == "cross":
                print(f"cross-class duplicates, mean over seeds: xdup AP {m['xdup_ap']:.3f} AUROC "
                      f"{m['xdup_auroc']:.3f} copy first {m['pair_acc']:.2f}; ensemble_duplicate "
                      f"AP {m['ens_ap']:.3f} AUROC {m['ens_auroc']:.3f}")
                continue
            print(f"{order:12s} {v:16s} {m['ap']:6.3f} {m['auroc']:6.3f} {m['pair_acc']:9.3f} "
                  f"{m['by_evidence']:9.2f} {m['ens_ap']:7.3f} {m['ens_auroc']:9.3f}")
        ds.delete()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
