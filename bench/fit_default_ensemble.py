"""Fit (and measure) the default ensemble shipped with the package: grader/models/default_ensemble.json.

    .venv/bin/python -u bench/fit_default_ensemble.py collect --split dev --seeds 0 1 2 3 4 5
    .venv/bin/python -u bench/fit_default_ensemble.py fit                       # dev caches only
    .venv/bin/python -u bench/fit_default_ensemble.py collect --split val --seeds 100 101 102
    .venv/bin/python -u bench/fit_default_ensemble.py eval                      # val: report only

``collect``: per seed, inject errors into a copy of the split's ground truth with
:func:`grader.noise.inject_errors` (every GT error type plus overlooked deletions; each rate
drawn in 3-10 %, swaps alternating uniform / confusable), run ``grader.grade(ds,
gt_field="noisy")`` with its defaults (the detector's predictions are computed on the first
seed and passed as ``pred_field`` afterwards: they do not depend on the labels), and cache per
label the judges' percentile features exactly as ``compute_ensemble`` builds them
(:func:`grader.ensemble_prior.label_percentiles`), the injected truth, the image, and the
default ensemble's (vote) output. Caches go to ``out/G-default-ensemble/`` (git-ignored).

``fit`` (coco128 = dev caches only): per issue and per judge subset (the full default
``grade()`` set, cleanlab + consistency, consistency alone), compare a class-balanced logistic
regression, the same with pairwise products of its inputs, and a small gradient-boosted model
(reference only: it would need pickle to ship) by cross-validated AUROC with the seeds as
groups (each fold holds out whole injection runs); ship the better logistic variant, refitted
on all dev labels, as explicit coefficients in JSON.

``eval`` (coco128-val caches, held out; reporting only): AUROC / AP per error type of the
shipped model vs the vote that ``grade()`` wrote vs the best single judge, per seed and mean.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

CACHE = REPO / "out" / "G-default-ensemble"
#: judge subsets a variant of the model is fitted for (grade() without a detector but with
#: predictions runs cleanlab + consistency; with neither, consistency alone).
VARIANTS = {"full": ("cleanlab", "zoom", "consistency"),
            "cleanlab+consistency": ("cleanlab", "consistency"),
            "consistency": ("consistency",)}


def collect(args) -> None:
    from eval_judges import _start_db, load_split

    srv = _start_db()
    try:
        from grader.ensemble_prior import label_percentiles
        from grader.evaluate import read_label_scores
        from grader.pipeline import DEFAULT_PRED_FIELD, grade
        from grader.noise import ERROR_TYPES, TRUTH_ATTR, inject_errors
        from grader.scores import SCORES

        CACHE.mkdir(parents=True, exist_ok=True)
        ds = load_split(args.split)
        pred_field = None
        for seed in args.seeds:
            t0 = time.time()
            rng = np.random.default_rng(10_000 + seed)
            rates = {t: float(np.round(rng.uniform(0.03, 0.10), 3)) for t in ERROR_TYPES}
            swap_to = "uniform" if seed % 2 == 0 else "confusable"
            for f in list(ds.get_field_schema()):
                if f.startswith("noisy_") and f != "noisy_deleted":
                    ds.delete_sample_field(f)
            rep = inject_errors(ds, "ground_truth", "noisy", rates=rates, seed=seed,
                                overwrite=True, swap_to=swap_to)
            g = grade(ds, gt_field="noisy", pred_field=pred_field)
            if pred_field is None:
                pred_field = g.pred_field or DEFAULT_PRED_FIELD
            pct, ls = label_percentiles(ds, "noisy", truth_attr=TRUTH_ATTR)
            # The default ensemble (the vote, with no verified images) that grade() wrote.
            ens_specs = [s for s in SCORES if s.judge == "ensemble"
                         and s.attr in (g.reports["ensemble"].fields or [])]
            ens = read_label_scores(ds, "noisy", truth_attr=None, trusted_tag="", specs=ens_specs)
            raw = {n: c for n, c in ls.columns.items()}
            out = {"split": args.split, "seed": seed, "rates": rates, "swap_to": swap_to,
                   "injected": rep.info["injected"], "pct": pct, "raw": raw,
                   "truth": np.array([t if t is not None else "unknown" for t in ls.truth], dtype=object),
                   "sample_ids": np.array(ls.sample_ids), "vote": ens.columns,
                   "ensemble_info": g.reports["ensemble"].info, "not_run": g.not_run}
            path = CACHE / f"{args.split}_seed{seed}.pkl"
            with open(path, "wb") as fh:
                pickle.dump(out, fh)
            print(f"[{args.split}] seed {seed}: rates {rates} swap_to={swap_to} injected "
                  f"{rep.info['injected']}; grade() ran {sorted(g.reports)}; {len(ls.label_ids)} labels; "
                  f"{time.time() - t0:.0f} s -> {path.name}", flush=True)
        ds.delete()
    finally:
        if srv is not None:
            srv.stop()


def _load(split: str) -> list[dict]:
    runs = []
    for p in sorted(CACHE.glob(f"{split}_seed*.pkl")):
        with open(p, "rb") as fh:
            runs.append(pickle.load(fh))
    return runs


ISSUES_ALL = ("badloc", "swap", "spurious", "duplicate", "any")
#: logistic candidates: (name, pairwise products?, C)
CANDIDATES = (("logistic_C1", False, 1.0), ("logistic_C0.1", False, 0.1),
              ("logistic_pairs_C1", True, 1.0), ("logistic_pairs_C0.1", True, 0.1),
              ("logistic_pairs_C0.01", True, 0.01))


def _labels(run: dict, issue: str) -> tuple[np.ndarray, np.ndarray]:
    """(positives, selected) masks: ``issue`` (or any error) vs clean, unknown truth left out."""
    from grader.noise import CLEAN

    t = run["truth"]
    pos = ((t != CLEAN) & (t != "unknown")) if issue == "any" else (t == issue)
    return pos, pos | (t == CLEAN)


def _features(runs: list[dict], judges: tuple[str, ...]) -> list[str]:
    """Feature names (stack_features order) of the scores of ``judges`` present in every run."""
    from grader.ensemble import stack_features

    common = set.intersection(*[set(r["pct"]) for r in runs])
    names = sorted(n for n in common if n.split(":")[0] in judges)
    # Missing indicators where a score abstains on some labels in any run.
    pooled = {n: np.concatenate([r["pct"][n] for r in runs]) for n in names}
    return stack_features(pooled)[1]


def _model(pairs: bool, C: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(class_weight="balanced", C=C, max_iter=5000)


def _hgb():
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_depth=3, max_iter=100, learning_rate=0.05,
                                          min_samples_leaf=20, l2_regularization=1.0,
                                          class_weight="balanced", random_state=0)


def _pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(i + 1, n)]


def _cv(runs, issue, feats, n_image_folds=3, with_hgb=False) -> dict[str, list[float]]:
    """AUROC per held-out seed: each label is predicted by a model that saw neither its seed
    (injection run) nor its image (image folds)."""
    from grader.ensemble_prior import design_matrix
    from grader.evaluate import auroc

    n_base = len(feats)
    pairs = _pairs(n_base)
    Xs = [design_matrix(r["pct"], feats, pairs) for r in runs]
    ys = [_labels(r, issue) for r in runs]
    images = sorted(set().union(*[set(r["sample_ids"]) for r in runs]))
    fold_of = {s: i % n_image_folds for i, s in enumerate(np.random.default_rng(0).permutation(images))}
    folds = [np.array([fold_of[s] for s in r["sample_ids"]]) for r in runs]
    cands = list(CANDIDATES) + ([("hgb", False, None)] if with_hgb else [])
    res = {c[0]: [] for c in cands}
    for k, run in enumerate(runs):
        preds = {c[0]: np.full(len(ys[k][0]), np.nan) for c in cands}
        for f in range(n_image_folds):
            tr_X = np.vstack([Xs[j][(folds[j] != f) & ys[j][1]] for j in range(len(runs)) if j != k])
            tr_y = np.concatenate([ys[j][0][(folds[j] != f) & ys[j][1]] for j in range(len(runs)) if j != k])
            te = (folds[k] == f) & ys[k][1]
            for name, use_pairs, C in cands:
                cols = slice(None) if use_pairs else slice(0, n_base)
                m = _hgb() if name == "hgb" else _model(use_pairs, C)
                m.fit(tr_X[:, cols], tr_y)
                preds[name][te] = m.predict_proba(Xs[k][te][:, cols])[:, 1]
        sel = ys[k][1]
        for name in preds:
            res[name].append(auroc(ys[k][0][sel].astype(int), preds[name][sel]))
    return res


def fit(args) -> None:
    import sklearn
    from threadpoolctl import threadpool_limits

    from grader.ensemble_prior import design_matrix
    from grader.evaluate import auroc

    runs = _load("dev")
    if not runs:
        raise SystemExit("no dev caches: run `collect --split dev` first")
    print(f"dev runs: {[r['seed'] for r in runs]}; labels per run {[len(r['truth']) for r in runs]}")
    model = {"format": "label-grader-default-ensemble/1",
             "sklearn_version": sklearn.__version__,
             "training_data": (f"coco128 (dev) only; {len(runs)} injection runs, seeds "
                               f"{[r['seed'] for r in runs]}: inject_errors with every GT error type "
                               f"and overlooked deletions, each rate drawn in 3-10 %, swap_to "
                               f"alternating uniform/confusable; scores from grader.grade() defaults "
                               f"(YOLOX-Nano, cleanlab, zoom, overlooked, consistency)"),
             "runs": [{"seed": r["seed"], "rates": r["rates"], "swap_to": r["swap_to"],
                       "injected": r["injected"]} for r in runs],
             "model": "class-balanced LogisticRegression on percentile features "
                      "(grader.ensemble.stack_features), optional pairwise products",
             "selection": "mean AUROC over held-out seeds x image folds (coco128 only)",
             "issues": {}}
    with threadpool_limits(limits=1):
        for issue in ISSUES_ALL:
            model["issues"][issue] = {}
            for variant, judges in VARIANTS.items():
                feats = [f for f in _features(runs, judges) if f not in args.drop]
                if not feats:
                    continue
                t0 = time.time()
                cv = _cv(runs, issue, feats, with_hgb=(variant == "full" and issue in args.hgb))
                mean = {k: float(np.nanmean(v)) for k, v in cv.items()}
                # Ship a logistic model (explicit coefficients); HGB is a reference only.
                best = max((c for c in CANDIDATES), key=lambda c: mean[c[0]])
                name, use_pairs, C = best
                pairs = _pairs(len(feats)) if use_pairs else []
                X = np.vstack([design_matrix(r["pct"], feats, pairs)[_labels(r, issue)[1]] for r in runs])
                y = np.concatenate([_labels(r, issue)[0][_labels(r, issue)[1]] for r in runs]).astype(int)
                m = _model(use_pairs, C).fit(X, y)
                vote = [auroc(_labels(r, issue)[0][_labels(r, issue)[1]].astype(int),
                              np.nan_to_num(r["vote"][f"ensemble:ensemble_{issue}"][_labels(r, issue)[1]], nan=-1.0))
                        for r in runs if f"ensemble:ensemble_{issue}" in r["vote"]]
                model["issues"][issue][variant] = {
                    "features": feats, "interactions": [list(p) for p in pairs],
                    "coef": [round(float(c), 6) for c in m.coef_[0]],
                    "intercept": round(float(m.intercept_[0]), 6), "candidate": name, "C": C,
                    "cv_auroc": {k: round(v, 4) for k, v in mean.items()},
                    "n_train": {"errors": int(y.sum()), "clean": int((1 - y).sum())}}
                print(f"{issue:>10s} {variant:>22s} ({len(feats)} feats, {time.time() - t0:.0f} s): "
                      + "  ".join(f"{k} {v:.3f}" for k, v in mean.items())
                      + (f"  | vote (no fit) {np.nanmean(vote):.3f}" if vote and variant == "full" else "")
                      + f"  -> {name}", flush=True)
    model["expects"] = _expects(model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def _expects(model: dict) -> dict[str, list[str]]:
    """Per variant, the score attributes (``judge:attr``) its models read."""
    from grader.ensemble_prior import base_scores

    out: dict[str, list[str]] = {}
    for entries in model["issues"].values():
        for variant, e in entries.items():
            out.setdefault(variant, [])
            out[variant] += [b for b in base_scores(e["features"]) if b not in out[variant]]
    return out


def evaluate(args) -> None:
    """Held-out report: the shipped model vs grade()'s vote vs the best single judge."""
    from grader.ensemble_prior import default_model_scores, load_default_model
    from grader.evaluate import _fill_unscored, auroc, average_precision

    model = load_default_model(args.model)
    runs = _load("val")
    if not runs:
        raise SystemExit("no val caches: run `collect --split val` first")
    rows = {}   # (issue, kind) -> [(auroc, ap)]
    best_names = {}
    for r in runs:
        for issue in ISSUES_ALL:
            pos, sel = _labels(r, issue)
            if not pos[sel].any():
                continue
            y = pos[sel].astype(int)
            got = default_model_scores(r["pct"], issue, model)
            cols = {"default_model": got[0] if got else None,
                    "vote": r["vote"].get(f"ensemble:ensemble_{issue}")}
            for kind, col in cols.items():
                if col is not None:
                    c = _fill_unscored(col[sel])
                    rows.setdefault((issue, kind), []).append((auroc(y, c), average_precision(y, c)))
            singles = {n: (auroc(y, _fill_unscored(c[sel])), average_precision(y, _fill_unscored(c[sel])))
                       for n, c in r["raw"].items()}
            bn = max(singles, key=lambda n: singles[n][0])
            rows.setdefault((issue, "best_single"), []).append(singles[bn])
            best_names.setdefault(issue, []).append(bn)
            print(f"val seed {r['seed']} {issue:>10s}: " + "  ".join(
                f"{k} {rows[issue, k][-1][0]:.3f} ({rows[issue, k][-1][1]:.3f})"
                for k in ("default_model", "vote", "best_single") if (issue, k) in rows)
                + f"  [best single: {bn}; model variant {got[1]['variant'] if got else None}]")
    print(f"\n== coco128-val (held out), all labels, mean over {len(runs)} seeds "
          f"{[r['seed'] for r in runs]}: AUROC (AP) ==")
    print(f"{'error':>10s} {'default model':>16s} {'vote':>16s} {'best single':>16s} "
          f"{'model-vote':>11s} {'model-best':>11s}  best single judge (most often)")
    for issue in ISSUES_ALL:
        m = {k: np.nanmean(np.array(rows[issue, k]), axis=0) for k in ("default_model", "vote", "best_single")
             if (issue, k) in rows}
        if len(m) < 3:
            continue
        bn = max(set(best_names[issue]), key=best_names[issue].count)
        print(f"{issue:>10s} " + " ".join(f"{m[k][0]:7.3f} ({m[k][1]:.3f})" for k in
                                          ("default_model", "vote", "best_single"))
              + f" {m['default_model'][0] - m['vote'][0]:+11.3f} {m['default_model'][0] - m['best_single'][0]:+11.3f}  {bn}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--split", choices=["dev", "val"], default="dev")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    f = sub.add_parser("fit")
    f.add_argument("--hgb", nargs="*", default=["any"],
                   help="issues whose full variant also gets a (reference) HGB in the CV")
    f.add_argument("--drop", nargs="*", default=[],
                   help="feature names to leave out (ablation), e.g. consistency:consistency_outlier:missing")
    f.add_argument("--out", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    e = sub.add_parser("eval")
    e.add_argument("--model", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    args = ap.parse_args(argv)
    if args.cmd == "collect":
        collect(args)
    elif args.cmd == "fit":
        fit(args)
    else:
        evaluate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
