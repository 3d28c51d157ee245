"""Fit (and measure) the default ensemble shipped with the package: grader/models/default_ensemble.json.

    B=out/G-default-ensemble-bg N=out/G-default-ensemble-nobg
    .venv/bin/python -u bench/fit_default_ensemble.py train-folds                # 3 box graders, coco128 folds
    .venv/bin/python -u bench/fit_default_ensemble.py collect --split dev --out-dir $B
    .venv/bin/python -u bench/fit_default_ensemble.py collect --split dev --out-dir $N --boxgrader off
    .venv/bin/python -u bench/fit_default_ensemble.py fit --cache-dir $N --box-cache-dir $B   # dev only
    .venv/bin/python -u bench/fit_default_ensemble.py collect --split val --seeds 100 101 102 --out-dir $B
    .venv/bin/python -u bench/fit_default_ensemble.py eval --cache-dir $B        # val: report only
    .venv/bin/python -u bench/fit_default_ensemble.py wiring                     # grade() end to end on val

``ensemble_any`` composed from the per-issue probabilities (grader.ensemble._any_from_issues):

    .venv/bin/python -u bench/fit_default_ensemble.py calibrate-any --seeds 0 1 2

Issue 22 (what the shipped ``any`` entries are today; R=out/dev_real):

    .venv/bin/python -u bench/fit_default_ensemble.py collect --split dev --mix real --out-dir $R
    .venv/bin/python -u bench/fit_default_ensemble.py anchor --cache-dir $R --issues any \
        --kind-weights cross_duplicate=3 --model <old json> --out <new json>
    .venv/bin/python -u bench/fit_default_ensemble.py calibrate --cache-dir $R --issues any \
        --today-only --transfer-from <old json> --model <new json>
    .venv/bin/python -u bench/fit_default_ensemble.py eval --cache-dir <val caches> --fuse --model ...

Reference distributions (what the shipped model reads at any share of errors;
``grader.ensemble_prior.reference_percentiles``), from dev caches collected as the model's
training runs were (out-of-fold box graders, rates drawn in 3-10 %):

    .venv/bin/python -u bench/fit_default_ensemble.py collect --split dev --seeds 0 1 2 --out-dir $B
    .venv/bin/python -u bench/fit_default_ensemble.py reference --cache-dir $B
    .venv/bin/python -u bench/fit_default_ensemble.py calibrate --cache-dir $B --reference \
        --issues badloc swap spurious duplicate     # per-issue scales on what the model now reads

``anchor`` adds scores to fitted entries (see its docstring); ``fit --kind-weights/--hinges``
refits from scratch on the real mix (measured, not shipped: it cost today's injected figures).

``train-folds``: the box grader that ``grade()`` runs by default was trained on all of coco128's
labels, so its scores on coco128 are in-sample (over-confident). For the dev caches, each of
3 image folds of coco128 is graded by a box grader trained, with the shipped checkpoint's
recipe and options, on the other two (``out/G-default-ensemble-bg/boxgrader_fold<k>/``).

``collect``: per seed, inject errors into a copy of the split's ground truth with
:func:`grader.noise.inject_errors` (every GT error type plus overlooked deletions; each rate
drawn in 3-10 %, swaps alternating uniform / confusable), run ``grader.grade(ds,
gt_field="noisy")`` with its defaults (the detector's predictions are computed on the first
seed and passed as ``pred_field`` afterwards: they do not depend on the labels; on dev the
box grader is the out-of-fold one, run before consistency as in ``grade()``; ``--boxgrader
off`` skips it), and cache per label the judges' percentile features exactly as
``compute_ensemble`` builds them (:func:`grader.ensemble_prior.label_percentiles`), the
injected truth, the image, and the equal-weight vote's output. Caches go to ``--out-dir``
(git-ignored).

``fit`` (coco128 = dev caches only): per issue and per judge subset (:data:`VARIANTS`: with and
without the box grader; the latter fitted on caches where it did not run), compare a
class-balanced logistic regression, the same with pairwise products of its inputs, and a
small gradient-boosted model (reference only: it would need pickle to ship) by
cross-validated AUROC with the seeds as groups (each fold holds out whole injection runs and
an image fold); ship the best logistic candidate, refitted on all dev labels, as explicit
coefficients in JSON.

``eval`` (coco128-val caches, held out; reporting only): AUROC / AP per error type of the
shipped model vs the vote vs the best single judge, per seed and mean. ``wiring``: plain
``grade()`` on a coco128-val copy must use the box grader variant and write its output.
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

import _harness as H
from _harness import REPO

H.one_thread_env()

CACHE = REPO / "out" / "G-default-ensemble"


def _data() -> Path:
    return H.DATA
#: number of image folds of coco128 for the out-of-fold box graders (``train-folds``)
BOX_FOLDS = 3
#: judge subsets a variant of the model is fitted for (grade() without a detector but with
#: predictions runs cleanlab + consistency; with neither, consistency alone).
VARIANTS = {"full": ("cleanlab", "zoom", "consistency"),
            "cleanlab+consistency": ("cleanlab", "consistency"),
            "consistency": ("consistency",),
            # grade() with the box grader (the shipped one runs by default on COCO classes):
            # with a detector; with predictions but detector=None; with neither.
            "full+boxgrader": ("cleanlab", "zoom", "boxgrader", "consistency"),
            "cleanlab+boxgrader+consistency": ("cleanlab", "boxgrader", "consistency"),
            "boxgrader+consistency": ("boxgrader", "consistency")}


def fold_of_images(filepaths, k: int = BOX_FOLDS) -> dict[str, int]:
    """Image fold (0..k-1) per file name: fixed by the names alone, so every fresh load of
    coco128 (new sample ids) gets the same folds."""
    names = sorted({os.path.basename(f) for f in filepaths})
    order = np.random.default_rng(0).permutation(len(names))
    return {names[j]: i % k for i, j in enumerate(order)}


def _fold_dir(k: int) -> Path:
    return Path(os.environ.get("LG_BOXFOLD_DIR", REPO / "out" / "G-default-ensemble-bg")) / f"boxgrader_fold{k}"


def train_folds(args) -> None:
    """Train one box grader per image fold of coco128, on the other folds' images, with the
    recipe and options of the shipped checkpoint (``bench/boxgrader.py`` defaults: seed 0,
    the classes of all of coco128): each fold's images are then graded by a model that never
    saw them (out-of-fold scores for ``collect --split dev``)."""
    from _harness import bench_db, load_split

    with bench_db():
        from grader.judges.clipgrader.boxgrader import train_boxgrader

        ds = load_split("dev")
        folds = fold_of_images(ds.values("filepath"), args.folds)
        classes = ds.distinct("ground_truth.detections.label")
        for k in args.only if args.only else range(args.folds):
            held = [f for f in ds.values("filepath") if folds[os.path.basename(f)] == k]
            t0 = time.time()
            res = train_boxgrader(ds.match(~_in_files(held)), "ground_truth", str(_fold_dir(k)),
                                  seed=0, classes=classes)
            print(f"fold {k}: trained on {len(ds) - len(held)} images (held out {len(held)}), "
                  f"{len(res.history)} epochs, good_threshold {res.good_threshold:.2f}, "
                  f"{time.time() - t0:.0f} s -> {res.best_checkpoint}", flush=True)
        ds.delete()


def _in_files(paths):
    from fiftyone import ViewField as F

    return F("filepath").is_in(list(paths))


def collect(args) -> None:
    from _harness import bench_db, load_split

    with bench_db():
        from grader.ensemble import compute_ensemble
        from grader.ensemble_prior import label_percentiles
        from grader.evaluate import read_label_scores
        from grader.judges.clipgrader.boxgrader import grade_boxgrader
        from grader.judges.consistency import run_consistency
        from grader.pipeline import DEFAULT_PRED_FIELD, grade
        from grader.noise import KIND_ATTR, TRUTH_ATTR
        from grader.scores import SCORES
        from grader.visibility import label_pixel_areas

        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ds = load_split(args.split)
        # dev (coco128): the shipped box grader was trained on these very labels, so its
        # scores here would be in-sample; each image is graded by the fold model that did
        # not see it (train-folds). val: grade()'s defaults, i.e. the shipped checkpoint.
        oof = args.boxgrader == "auto" and args.split == "dev"
        if oof:
            folds = fold_of_images(ds.values("filepath"))
            ckpts = {k: _fold_dir(k) / "best.pt" for k in set(folds.values())}
            missing = [str(c) for c in ckpts.values() if not c.is_file()]
            if missing:
                raise SystemExit(f"no fold box graders {missing}: run `train-folds` first")
        pred_field = None
        for seed in args.seeds:
            t0 = time.time()
            rep, rates, swap_to = _inject(ds, seed, mix=args.mix)
            # The ensemble cached as "vote" is the equal-weight vote (no shipped model).
            opts = {"ensemble": {"default_model": False}}
            if args.boxgrader == "off":
                opts["boxgrader"] = False
            elif oof:   # the box grader and what reads its scores run below, out of fold
                opts.update(boxgrader=False, consistency=False, ensemble=False)
            g = grade(ds, gt_field="noisy", pred_field=pred_field, **opts)
            if pred_field is None:
                pred_field = g.pred_field or DEFAULT_PRED_FIELD
            if oof:
                for k, ckpt in sorted(ckpts.items()):
                    files = [f for f in ds.values("filepath") if folds[os.path.basename(f)] == k]
                    g.reports[f"boxgrader_fold{k}"] = grade_boxgrader(
                        ds.match(_in_files(files)), "noisy", checkpoint=str(ckpt))
                # In grade()'s order: consistency reads the box grader's scores as evidence.
                g.reports["consistency"] = run_consistency(ds, "noisy")
                g.reports["ensemble"] = compute_ensemble(ds, "noisy", default_model=False)
                for step in ("boxgrader", "consistency", "ensemble"):
                    g.not_run.pop(step, None)
            pct, ls = label_percentiles(ds, "noisy", truth_attr=TRUTH_ATTR)
            # The default ensemble (the vote, with no verified images) that grade() wrote.
            ens_specs = [s for s in SCORES if s.judge == "ensemble"
                         and s.attr in (g.reports["ensemble"].fields or [])]
            ens = read_label_scores(ds, "noisy", truth_attr=None, trusted_tag="", specs=ens_specs)
            raw = {n: c for n, c in ls.columns.items()}
            kinds = _label_values(ds, "noisy", KIND_ATTR, ls.label_ids)
            out = {"split": args.split, "seed": seed, "rates": rates, "swap_to": swap_to, "mix": args.mix,
                   # pixel area and real-looking kind per label: size features / per-kind figures
                   "area_px": label_pixel_areas(ds, "noisy", ls.label_ids),
                   "kind": np.array([k or "" for k in kinds], dtype=object),
                   "injected": rep.info["injected"], "pct": pct, "raw": raw,
                   "truth": np.array([t if t is not None else "unknown" for t in ls.truth], dtype=object),
                   "sample_ids": np.array(ls.sample_ids), "vote": ens.columns,
                   "ensemble_info": g.reports["ensemble"].info, "not_run": g.not_run,
                   "boxgrader": ("out-of-fold" if oof else "off" if args.boxgrader == "off"
                                 else "grade() default")}
            path = out_dir / f"{args.split}_seed{seed}.pkl"
            with open(path, "wb") as fh:
                pickle.dump(out, fh)
            print(f"[{args.split}] seed {seed}: rates {rates} swap_to={swap_to} injected "
                  f"{rep.info['injected']}; grade() ran {sorted(g.reports)}; {len(ls.label_ids)} labels; "
                  f"{time.time() - t0:.0f} s -> {path.name}", flush=True)
        ds.delete()


def _label_values(ds, field: str, attr: str, label_ids) -> list:
    """``attr`` of each label of ``field`` in the order of ``label_ids`` (None where unset)."""
    ids, vals = ds.values([f"{field}.detections.id", f"{field}.detections.{attr}"], unwind=True)
    by_id = dict(zip(ids, vals))
    return [by_id.get(l) for l in label_ids]


def _inject(ds, seed: int, mix: str = "default"):
    """Errors of every type into ``noisy`` (a copy of the GT), each rate drawn in 3-10 %,
    swaps alternating uniform / confusable by seed. ``mix="real"`` adds the real-looking types
    (:data:`grader.noise.REAL_MIX_RATES`), each at 0.5-1.5x its rate there (drawn after
    today's, so today's rates for a seed are unchanged). Returns (report, rates, swap_to)."""
    from grader.noise import ERROR_TYPES, REAL_ERROR_TYPES, REAL_MIX_RATES, inject_errors

    rng = np.random.default_rng(10_000 + seed)
    rates = {t: float(np.round(rng.uniform(0.03, 0.10), 3)) for t in ERROR_TYPES}
    if mix == "real":
        rates.update({t: float(np.round(REAL_MIX_RATES[t] * rng.uniform(0.5, 1.5), 4))
                      for t in REAL_ERROR_TYPES})
    swap_to = "uniform" if seed % 2 == 0 else "confusable"
    for f in list(ds.get_field_schema()):
        if f.startswith("noisy_") and f != "noisy_deleted":
            ds.delete_sample_field(f)
    rep = inject_errors(ds, "ground_truth", "noisy", rates=rates, seed=seed,
                        overwrite=True, swap_to=swap_to)
    return rep, rates, swap_to


def wiring(args) -> None:
    """End-to-end check on a coco128-val copy with injected errors: plain ``grade()`` (every
    default, the shipped box grader included) must combine the scores with the shipped
    model's box grader variant, and the ``ensemble_<issue>`` it wrote must be that model's
    output on the scores present; prints the held-out AUROC (AP) of what grade() wrote."""
    from _harness import bench_db, load_split

    with bench_db():
        from grader.ensemble_prior import default_model_scores, label_percentiles, load_default_model
        from grader.evaluate import _fill_unscored, auroc, average_precision
        from grader.noise import TRUTH_ATTR
        from grader.pipeline import grade

        ds = load_split("val")
        _inject(ds, args.seed)
        t0 = time.time()
        g = grade(ds, gt_field="noisy")
        print(f"grade() on coco128-val (seed {args.seed}): ran {sorted(g.reports)}, not run "
              f"{g.not_run}; {time.time() - t0:.0f} s")
        info = g.reports["ensemble"].info["learner"]
        pct, ls = label_percentiles(ds, "noisy", truth_attr=TRUTH_ATTR)
        model = load_default_model()
        ok = True
        for issue, li in info.items():
            want = default_model_scores(pct, issue, model)
            got = np.array(ds.values(f"noisy.detections.ensemble_{issue}", unwind=True), dtype=float)
            ids = ds.values("noisy.detections.id", unwind=True)
            got = dict(zip(ids, got))
            got = np.array([got[l] for l in ls.label_ids], dtype=float)
            same = want is not None and np.allclose(np.nan_to_num(got, nan=-1), np.nan_to_num(want[0], nan=-1))
            expect = args.expect
            if issue == "any":
                # composed with the per-issue probabilities: tests/test_ensemble_prior.py
                # checks that formula, so here only which variant was used
                expect = f"max({args.expect}, noisy_or)"
                same = want is not None
            ok &= bool(same and li.get("variant") == expect)
            pos, sel = _labels({"truth": np.array([t if t is not None else "unknown" for t in ls.truth],
                                                  dtype=object)}, issue)
            c = _fill_unscored(got[sel])
            print(f"{issue:>10s}: chosen {li['chosen']}, variant {li.get('variant')}, "
                  f"fields == shipped model on these scores: {same}; AUROC {auroc(pos[sel].astype(int), c):.3f} "
                  f"(AP {average_precision(pos[sel].astype(int), c):.3f}); ignored {li.get('ignored')}")
        print("WIRING OK" if ok else f"WIRING FAILED (expected variant {args.expect})")
        ds.delete()


def _load(split: str, cache: Path | str = CACHE) -> list[dict]:
    runs = []
    for p in sorted(Path(cache).glob(f"{split}_seed*.pkl")):
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


#: Features never used. ``boxgrader_p_other_class`` is None where the label's class is not one
#: the box grader was trained on. On coco128 that happens only to injected errors (swaps and
#: spurious boxes drawn with classes coco128's labels lack: every such label in the dev caches is
#: an error, see ``fit``'s printout), so its missing indicator would learn "unknown class =
#: error"; on a user's data it means a rare class, mostly correct.
NEVER = ("boxgrader:boxgrader_p_other_class:missing",)


#: Hinges on a score's top percentiles (grader.score_stats.stack_features): consistency_xdup's
#: evidence is in its last few percent (a cross-class partner at high IoU; on the dev caches
#: x >= 0.5 starts at the 96th percentile), which a weight on the percentile itself cannot single out.
HINGES = ("consistency:consistency_xdup:top95",)


#: (issue, score) pairs whose single-judge AUROC fit / eval print (the box grader's strength
#: out of fold on dev vs the shipped checkpoint on val)
BOX_SINGLES = (("badloc", "boxgrader:boxgrader_p_bad"), ("badloc", "boxgrader:boxgrader_p_not_good"),
               ("swap", "boxgrader:boxgrader_p_other_class"),
               ("spurious", "boxgrader:boxgrader_p_background"), ("any", "boxgrader:boxgrader_p_not_good"))


def _print_box_singles(runs: list[dict], split: str) -> None:
    from grader.evaluate import _fill_unscored, auroc

    out = []
    for issue, name in BOX_SINGLES:
        a = [auroc(_labels(r, issue)[0][_labels(r, issue)[1]].astype(int),
                   _fill_unscored(r["raw"][name][_labels(r, issue)[1]])) for r in runs if name in r["raw"]]
        if a:
            out.append(f"{issue} {name.split(':')[1]} {np.mean(a):.3f}")
    if out:
        print(f"box grader alone on {split} ({runs[0].get('boxgrader')}), mean AUROC: " + "; ".join(out))


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


def _weights(run: dict, kind_weights: dict[str, float], issue: str | None = None) -> np.ndarray:
    """Training weight per label: ``kind_weights[kind]`` (or ``kind_weights["<issue>:<kind>"]``,
    which wins for that issue) for an injected error of that real-looking kind
    (``--kind-weights``; 0 leaves it out), else 1."""
    w = np.ones(len(run["truth"]))
    kinds = run.get("kind")
    if kinds is None:
        return w
    for k, v in (kind_weights or {}).items():
        if ":" not in k:
            w[kinds == k] = v
    for k, v in (kind_weights or {}).items():
        if issue is not None and k.startswith(f"{issue}:"):
            w[kinds == k.split(":", 1)[1]] = v
    return w


def _cv(runs, issue, feats, n_image_folds=3, with_hgb=False,
        kind_weights: dict[str, float] | None = None) -> dict[str, list[float]]:
    """AUROC per held-out seed: each label is predicted by a model that saw neither its seed
    (injection run) nor its image (image folds)."""
    from grader.ensemble_prior import design_matrix
    from grader.evaluate import auroc

    n_base = len(feats)
    pairs = _pairs(n_base)
    Xs = [design_matrix(r["pct"], feats, pairs) for r in runs]
    ys = [_labels(r, issue) for r in runs]
    ws = [_weights(r, kind_weights, issue) for r in runs]
    # today's error types only (no real-looking kind): what the held-out injected figures measure
    today = [(r["kind"] == "") if r.get("kind") is not None else np.ones(len(r["truth"]), bool)
             for r in runs]
    images = sorted(set().union(*[set(r["sample_ids"]) for r in runs]))
    fold_of = {s: i % n_image_folds for i, s in enumerate(np.random.default_rng(0).permutation(images))}
    folds = [np.array([fold_of[s] for s in r["sample_ids"]]) for r in runs]
    cands = list(CANDIDATES) + ([("hgb", False, None)] if with_hgb else [])
    res = {c[0]: [] for c in cands}
    res.update({f"{c[0]}@today": [] for c in cands})
    for k, run in enumerate(runs):
        preds = {c[0]: np.full(len(ys[k][0]), np.nan) for c in cands}
        for f in range(n_image_folds):
            tr_X = np.vstack([Xs[j][(folds[j] != f) & ys[j][1]] for j in range(len(runs)) if j != k])
            tr_y = np.concatenate([ys[j][0][(folds[j] != f) & ys[j][1]] for j in range(len(runs)) if j != k])
            tr_w = np.concatenate([ws[j][(folds[j] != f) & ys[j][1]] for j in range(len(runs)) if j != k])
            te = (folds[k] == f) & ys[k][1]
            for name, use_pairs, C in cands:
                cols = slice(None) if use_pairs else slice(0, n_base)
                m = _hgb() if name == "hgb" else _model(use_pairs, C)
                m.fit(tr_X[:, cols], tr_y, sample_weight=tr_w)
                preds[name][te] = m.predict_proba(Xs[k][te][:, cols])[:, 1]
        sel = ys[k][1]
        for name in preds:
            res[name].append(auroc(ys[k][0][sel].astype(int), preds[name][sel]))
            t = sel & today[k]
            res[f"{name}@today"].append(auroc(ys[k][0][t].astype(int), preds[name][t]))
    return res


def fit(args) -> None:
    import sklearn
    from threadpoolctl import threadpool_limits

    from grader.ensemble_prior import design_matrix
    from grader.evaluate import auroc
    from grader.score_stats import feature_base

    kind_weights = {k: float(v) for k, v in (a.split("=") for a in args.kind_weights)}
    base_runs = _load("dev", args.cache_dir)
    box_runs = _load("dev", args.box_cache_dir) if args.box_cache_dir else base_runs
    if not base_runs or not box_runs:
        raise SystemExit("no dev caches: run `collect --split dev` first")
    # Variants without the box grader are fitted on runs where it did not run either
    # (consistency then picks the weaker box of a duplicate pair without its scores).
    runs_for = lambda judges: box_runs if "boxgrader" in judges else base_runs
    for name, rs in (("base", base_runs), ("box grader", box_runs)):
        print(f"dev runs ({name}): {[r['seed'] for r in rs]}; labels per run {[len(r['truth']) for r in rs]}; "
              f"box grader: {sorted({r.get('boxgrader', 'not run') for r in rs})}")
    for name in NEVER:
        base = name[:-len(":missing")]
        miss = np.concatenate([~np.isfinite(r["raw"][base]) for r in box_runs if base in r["raw"]])
        truth = np.concatenate([r["truth"] for r in box_runs if base in r["raw"]])
        print(f"left out {name}: set on {int(miss.sum())} dev labels, of which "
              f"{int((truth[miss] != 'none').sum())} injected errors")
    _print_box_singles(box_runs, "dev")
    runs = box_runs
    model = {"format": "label-grader-default-ensemble/1",
             "sklearn_version": sklearn.__version__,
             "training_data": (f"coco128 (dev) only; {len(runs)} injection runs, seeds "
                               f"{[r['seed'] for r in runs]}: inject_errors with every GT error type "
                               f"and overlooked deletions, each rate drawn in 3-10 %"
                               + (", plus the real-looking types at 0.5-1.5x REAL_MIX_RATES"
                                  if any(r.get("mix") == "real" for r in runs) else "")
                               + f", swap_to "
                               f"alternating uniform/confusable; scores from grader.grade() defaults "
                               f"(YOLOX-Nano, cleanlab, zoom, overlooked, consistency); variants with "
                               f"the box grader: its scores out of fold ({BOX_FOLDS} image folds of "
                               f"coco128, each graded by a box grader trained on the others)"),
             # compute_ensemble("auto") uses the model only where most labels are of these.
             "classes": [c["name"] for c in sorted(json.loads((_data() / "coco128" / "labels.json")
                         .read_text())["categories"], key=lambda c: c["id"])],
             "runs": [{"seed": r["seed"], "rates": r["rates"], "swap_to": r["swap_to"],
                       "injected": r["injected"]} for r in runs],
             "model": "class-balanced LogisticRegression on percentile features "
                      "(grader.ensemble.stack_features), optional pairwise products",
             "selection": "mean AUROC over held-out seeds x image folds (coco128 only)",
             "hinges": list(args.hinges), "kind_weights": kind_weights,
             "issues": {}}
    with threadpool_limits(limits=1):
        for issue in ISSUES_ALL:
            model["issues"][issue] = {}
            for variant, judges in VARIANTS.items():
                runs = runs_for(judges)
                if any(not any(n.startswith(f"{j}:") for n in r["pct"]) for r in runs for j in judges):
                    print(f"{issue:>10s} {variant:>30s}: skipped (a judge did not run in every cache)")
                    continue
                feats = [f for f in _features(runs, judges) if f not in args.drop and f not in NEVER]
                feats += [h for h in args.hinges if feature_base(h)[0] in feats]
                if not feats:
                    continue
                t0 = time.time()
                cv = _cv(runs, issue, feats, with_hgb=(variant in ("full", "full+boxgrader") and issue in args.hgb),
                         kind_weights=kind_weights)
                mean = {k: float(np.nanmean(v)) for k, v in cv.items()}
                # Ship a logistic model (explicit coefficients); HGB is a reference only.
                best = max((c for c in CANDIDATES), key=lambda c: mean[c[0]])
                name, use_pairs, C = best
                pairs = _pairs(len(feats)) if use_pairs else []
                X = np.vstack([design_matrix(r["pct"], feats, pairs)[_labels(r, issue)[1]] for r in runs])
                y = np.concatenate([_labels(r, issue)[0][_labels(r, issue)[1]] for r in runs]).astype(int)
                w = np.concatenate([_weights(r, kind_weights, issue)[_labels(r, issue)[1]] for r in runs])
                m = _model(use_pairs, C).fit(X, y, sample_weight=w)
                vote = [auroc(_labels(r, issue)[0][_labels(r, issue)[1]].astype(int),
                              np.nan_to_num(r["vote"][f"ensemble:ensemble_{issue}"][_labels(r, issue)[1]], nan=-1.0))
                        for r in runs if f"ensemble:ensemble_{issue}" in r["vote"]]
                model["issues"][issue][variant] = {
                    "features": feats, "interactions": [list(p) for p in pairs],
                    "coef": [round(float(c), 6) for c in m.coef_[0]],
                    "intercept": round(float(m.intercept_[0]), 6), "candidate": name, "C": C,
                    "cv_auroc": {k: round(v, 4) for k, v in mean.items()},
                    "n_train": {"errors": int(y.sum()), "clean": int((1 - y).sum())}}
                print(f"{issue:>10s} {variant:>30s} ({len(feats)} feats, {time.time() - t0:.0f} s): "
                      + "  ".join(f"{k} {v:.3f}" for k, v in mean.items())
                      + (f"  | vote (no fit) {np.nanmean(vote):.3f}" if vote and variant.startswith("full") else "")
                      + f"  -> {name}", flush=True)
    model["expects"] = _expects(model)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


def anchor(args) -> None:
    """Add scores to the shipped model's entries without refitting them (coco128 dev caches).

    Per issue in ``--issues`` and per variant: a class-balanced logistic regression on the
    entry's own log-odds ``z`` plus the new features (``--add``, e.g. ``consistency_xdup`` and
    its top-percentile hinge), fitted on the dev caches (``--kind-weights`` as in ``fit``). As
    ``a z + w . x + c`` is again linear in the entry's inputs, the result is written as a plain
    entry (coefficients ``a`` times the old ones, the new features appended after the old, so
    the pairwise interactions keep their indices): the model decides how much the new scores
    count against what it already knew, without losing what it was fitted on for today's errors.
    """
    from threadpoolctl import threadpool_limits

    from grader.ensemble_prior import design_matrix
    from grader.evaluate import auroc

    model = json.loads(Path(args.model).read_text())
    runs = _load("dev", args.cache_dir)
    if not runs:
        raise SystemExit(f"no dev caches in {args.cache_dir}")
    kind_weights = {k: float(v) for k, v in (a.split("=") for a in args.kind_weights)}
    with threadpool_limits(limits=1):
        for issue in args.issues:
            for variant, e in model["issues"][issue].items():
                add = [f for f in args.add if f not in e["features"]]
                zs, Xs, ys, ws, todays = [], [], [], [], []
                for r in runs:
                    pos, sel = _labels(r, issue)
                    z = design_matrix(r["pct"], e["features"], e.get("interactions", ())) \
                        @ np.asarray(e["coef"]) + float(e["intercept"])
                    zs.append(z[sel])
                    Xs.append(design_matrix(r["pct"], add)[sel])
                    ys.append(pos[sel].astype(int))
                    ws.append(_weights(r, kind_weights, issue)[sel])
                    todays.append((r["kind"] == "")[sel] if r.get("kind") is not None
                                  else np.ones(int(sel.sum()), bool))
                X = np.column_stack([np.concatenate(zs), np.vstack(Xs)])
                y, w = np.concatenate(ys), np.concatenate(ws)
                m = _model(False, args.C).fit(X, y, sample_weight=w)
                a, coef = float(m.coef_[0, 0]), [float(c) for c in m.coef_[0, 1:]]
                # leave-one-run-out AUROC of the anchored score vs the entry alone, all errors
                # and today's types only (what the held-out injected figures measure)
                cv = {"entry": [], "anchored": [], "entry@today": [], "anchored@today": []}
                for k in range(len(runs)):
                    tr = np.concatenate([np.full(len(ys[j]), j != k) for j in range(len(runs))])
                    mk = _model(False, args.C).fit(X[tr], y[tr], sample_weight=w[tr])
                    te = ~tr
                    s_new = mk.decision_function(X[te])
                    t = todays[k]
                    cv["entry"].append(auroc(y[te], X[te, 0]))
                    cv["anchored"].append(auroc(y[te], s_new))
                    cv["entry@today"].append(auroc(y[te][t], X[te, 0][t]))
                    cv["anchored@today"].append(auroc(y[te][t], s_new[t]))
                n_base = len(e["features"])
                old = np.asarray(e["coef"], dtype=float)
                e["coef"] = [round(float(c), 6) for c in
                             np.concatenate([a * old[:n_base], coef, a * old[n_base:]])]
                e["features"] = list(e["features"]) + add
                e["intercept"] = round(a * float(e["intercept"]) + float(m.intercept_[0]), 6)
                e["n_train"] = {"errors": int(y.sum()), "clean": int((1 - y).sum())}
                e["anchored"] = {"added": add, "scale": round(a, 6),
                                 "coef": [round(c, 6) for c in coef], "C": args.C,
                                 "kind_weights": kind_weights,
                                 "cv_auroc_leave_one_run_out": {k: round(float(np.mean(v)), 4)
                                                                for k, v in cv.items()}}
                e.pop("platt", None)   # the log-odds changed: calibrate again
                print(f"{issue:>10s} {variant:>30s}: a {a:.3f} " +
                      " ".join(f"{f.split(':', 1)[1]} {c:+.3f}" for f, c in zip(add, coef)) + "; "
                      + "  ".join(f"{k} {np.mean(v):.4f}" for k, v in cv.items()), flush=True)
    model["expects"] = _expects(model)
    model["anchored"] = (f"{', '.join(args.issues)}: the entries above with {', '.join(args.add)} "
                         f"added by `bench/fit_default_ensemble.py anchor` on {len(runs)} coco128 "
                         f"runs (seeds {[r['seed'] for r in runs]}, mix "
                         f"{sorted({r.get('mix', 'default') for r in runs})})")
    Path(args.out).write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {args.out}")


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
    runs = _load("val", args.cache_dir)
    if not runs:
        raise SystemExit("no val caches: run `collect --split val` first")
    _print_box_singles(runs, "val")
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
            if args.fuse and got:
                # compute_ensemble's post-hoc noisy-OR of consistency_xdup (fuse_cross_duplicates)
                cols["default_model"] = _fused(got, r["raw"], issue)
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
    _print_kinds(runs, model, args.fuse)
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


def _fused(got: tuple[np.ndarray, dict], raw: dict, issue: str) -> np.ndarray:
    """The model's scores ``got`` (from ``default_model_scores``) with ``consistency_xdup``
    fused in as ``compute_ensemble(fuse_cross_duplicates=True)`` does (duplicate and any, and
    not where the model reads the score itself)."""
    from grader.ensemble import XDUP_ISSUES, XDUP_SCORE, _fuse_cross_duplicates
    from grader.report import RunReport

    if issue not in XDUP_ISSUES or XDUP_SCORE not in raw:
        return got[0]
    scores = {issue: got[0].copy()}
    _fuse_cross_duplicates(scores, {XDUP_SCORE: raw[XDUP_SCORE]}, RunReport(judge="ensemble"),
                           learners={issue: got[1]})
    return scores[issue]


def _print_kinds(runs: list[dict], model: dict, fuse: bool) -> None:
    """AUROC of the model's ``any`` (and the injected issue's) score per real-looking error
    kind (``--mix real`` caches) against the clean labels, pooled over runs."""
    from grader.ensemble_prior import default_model_scores
    from grader.evaluate import _fill_unscored, auroc
    from grader.noise import CLEAN, REAL_ERROR_TYPES

    if not any(r.get("kind") is not None and (r["kind"] != "").any() for r in runs):
        return
    print("\nper real-looking kind, AUROC vs clean (pooled over runs): any score | issue score")
    for kind, issue in REAL_ERROR_TYPES.items():
        out = []
        for score_issue in ("any", issue):
            ys, cs = [], []
            for r in runs:
                got = default_model_scores(r["pct"], score_issue, model)
                if got is None or r.get("kind") is None:
                    continue
                col = _fused(got, r["raw"], score_issue) if fuse else got[0]
                sel = (r["kind"] == kind) | (r["truth"] == CLEAN)
                # rank within the run (scores of different runs are not on one scale)
                ys.append((r["kind"][sel] == kind).astype(int))
                cs.append(_fill_unscored(col[sel]))
            if ys and sum(y.sum() for y in ys):
                out.append(f"{np.mean([auroc(y, c) for y, c in zip(ys, cs) if y.any()]):.3f}")
        n = sum(int((r["kind"] == kind).sum()) for r in runs if r.get("kind") is not None)
        if n:
            print(f"{kind:>16s} (n={n:3d}, {issue}): " + " | ".join(out))


def calibrate(args) -> None:
    """Platt-scale the shipped model's outputs on a dataset graded with grade()'s defaults and
    injected errors (coco128 only, e.g. bench/review_learning.py --reuse's graded start, read
    from FIFTYONE_DATABASE_URI): per issue, for the variant the run used, ``P(issue) =
    sigmoid(a z + b)`` of the model's raw log-odds ``z``, stored as the entry's ``platt``."""
    from sklearn.linear_model import LogisticRegression

    from grader.ensemble_prior import choose_variant, design_matrix, label_percentiles
    from grader.evaluate import reliability
    from grader.noise import CLEAN, TRUTH_ATTR

    model = json.loads(Path(args.model).read_text())
    if args.cache_dir:
        # Dev caches (coco128 only), pooled: the share of each issue's errors is set back to
        # what the entry was calibrated to before (``--rate``: that rate for every issue but
        # ``any``), so a mix with more errors than grade() will meet does not shift the scale.
        runs = _load("dev", args.cache_dir)
        if not runs:
            raise SystemExit(f"no dev caches in {args.cache_dir}")
        if args.reference:
            # what compute_ensemble gives the model now: each raw score against the reference
            from grader.ensemble_prior import reference_percentiles

            feats = [reference_percentiles(r["pct"], r["raw"], model) for r in runs]
        else:
            feats = [r["pct"] for r in runs]
        pct = {n: np.concatenate([f[n] for f in feats])
               for n in set.intersection(*[set(f) for f in feats])}
        truth = np.concatenate([r["truth"] for r in runs])
        if args.today_only:
            # The real-looking kinds left out: the scale is read as grade() is measured, on
            # today's error types (eval_judges' ECE).
            real = np.concatenate([r["kind"] != "" if r.get("kind") is not None
                                   else np.zeros(len(r["truth"]), bool) for r in runs])
            truth = np.where(real, "excluded", truth)
        source = (f"dev caches {Path(args.cache_dir).name} (seeds {[r['seed'] for r in runs]}"
                  + (", today's error types" if args.today_only else "") + ")")
    else:
        import fiftyone as fo

        ds = fo.load_dataset(args.dataset)
        pct, ls = label_percentiles(ds, args.field, truth_attr=TRUTH_ATTR, exclude_judges=["brain"])
        truth = np.array([t if t is not None else CLEAN for t in ls.truth], dtype=object)
        source = args.dataset
    for issue, entries in model["issues"].items():
        variant = choose_variant(model, issue, list(pct))
        if variant is None or (args.issues and issue not in args.issues):
            continue
        e = entries[variant]
        z = design_matrix(pct, e["features"], e.get("interactions", ())) @ np.asarray(e["coef"]) \
            + float(e["intercept"])
        pos = ((truth != CLEAN) & (truth != "excluded")) if issue == "any" else (truth == issue)
        sel = pos | (truth == CLEAN)
        w = np.ones(int(sel.sum()))
        target = _calibration_rate(e, issue, args.rate) if args.cache_dir else None
        if target is not None:
            p, n = pos[sel].sum(), (~pos[sel]).sum()
            w[pos[sel]] = target / (1 - target) * n / p
        fitted_on = source
        if args.transfer_from:
            # Keep the scale measured before (on graded coco128; val ECE 0.048): the old
            # entry's calibrated log-odds, matched by least squares on these labels.
            oe = json.loads(Path(args.transfer_from).read_text())["issues"][issue][variant]
            zo = design_matrix(pct, oe["features"], oe.get("interactions", ())) \
                @ np.asarray(oe["coef"]) + float(oe["intercept"])
            target_z = float(oe["platt"]["a"]) * zo[sel] + float(oe["platt"]["b"])
            a, b = (float(v) for v in np.polyfit(z[sel], target_z, 1))
            fitted_on = f"{oe['platt']['fitted_on']}, transferred on {source}"
        else:
            m = LogisticRegression(C=1e4, max_iter=1000).fit(z[sel][:, None], pos[sel], sample_weight=w)
            a, b = float(m.coef_[0, 0]), float(m.intercept_[0])
        before = reliability(pos[sel], 1 / (1 + np.exp(-(z[sel] + np.log(
            e["n_train"]["errors"] / e["n_train"]["clean"])))))[0]
        after = reliability(pos[sel], 1 / (1 + np.exp(-(a * z[sel] + b))))[0]
        e["platt"] = {"a": round(a, 6), "b": round(b, 6), "fitted_on": fitted_on,
                      "labels": int(sel.sum()), "errors": int(pos[sel].sum())}
        if target is not None:
            e["platt"]["error_rate"] = round(float(target), 4)
        print(f"{issue:>10s} {variant:>30s}: a {a:.3f} b {b:.3f}; ECE (in sample, unweighted) "
              f"{before:.3f} (prior shift) -> {after:.3f}"
              + (f"; errors weighted to {target:.3f} of the labels" if target is not None else ""))
    Path(args.model).write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {args.model}")


def _weighted_platt(x: np.ndarray, y: np.ndarray, target: float, max_slope: float | None = None
                    ) -> tuple[float, float]:
    """``sigmoid(a x + b)`` fitted with the errors weighted to the share ``target`` (as
    `calibrate` does: the rates drawn per seed here are 3-10 %); ``max_slope``: ``a`` capped,
    the offset then refitted alone."""
    from scipy.optimize import minimize_scalar
    from sklearn.linear_model import LogisticRegression

    w = np.where(y, target / (1 - target) * (~y).sum() / y.sum(), 1.0)
    m = LogisticRegression(C=1e4, max_iter=1000).fit(x[:, None], y, sample_weight=w)
    a, b = float(m.coef_[0, 0]), float(m.intercept_[0])
    if max_slope is not None and a > max_slope:
        a = max_slope
        nll = lambda bb: float(np.sum(w * (np.logaddexp(0, a * x + bb) - y * (a * x + bb))))
        b = float(minimize_scalar(nll).x)
    return a, b


def calibrate_any(args) -> None:
    """Fit the two compositions compute_ensemble applies over the shipped model's entries, on
    coco128 with injected errors (as ``collect``; per seed ``grade(ds, gt_field="noisy")`` with
    its defaults, the labels kept in a field per seed), stored in the model JSON:

    1. ``duplicate_composition.platt``: ``sigmoid(a (w p + d) + b)`` over the model's duplicate
       probability ``p`` (weighted by ``--dup-p-weight``) plus the raw ``consistency_duplicate`` ``d``
       (grader.ensemble._compose_duplicate), from the ensemble run with neither composition
       nor the cross-class fusion;
    2. ``any_composition.platt``: ``sigmoid(a logit(q) + b)`` over ``ensemble_any`` where it is
       composed (the higher of the model's own ``any`` and the per-issue noisy-OR, which reads
       high), from the ensemble run again with (1) and without the fusion.

    (The box grader here is the shipped one, in-sample on coco128: its scores are surer than on
    new images, so the any scale is fitted at a slope of at most 1.)"""
    import tempfile

    from _harness import bench_db, load_split

    model = json.loads(Path(args.model).read_text())
    plain = {k: v for k, v in model.items() if k not in ("any_composition", "duplicate_composition")}
    values = lambda ds, f, a: np.array([np.nan if v is None else v for v in
                                        ds.values(f"{f}.detections.{a}", unwind=True)], float)
    with bench_db(), tempfile.TemporaryDirectory() as tmp:
        from grader.ensemble import compute_ensemble
        from grader.evaluate import reliability
        from grader.pipeline import grade

        step = Path(tmp) / "model.json"
        step.write_text(json.dumps(plain))
        ds = load_split("dev", "calib-any")
        pred, fields = None, []
        for seed in args.seeds:
            _inject(ds, seed)
            g = grade(ds, gt_field="noisy", **({"pred_field": pred} if pred else {}))
            pred = g.pred_field
            fields.append(f"calib_seed{seed}")   # (_inject drops "noisy_*" fields)
            ds.clone_sample_field("noisy", fields[-1])

        def pooled(attr: str, extra: tuple[str, ...] = ()):
            cols = {a: [] for a in (attr, *extra, "injected_error")}
            for f in fields:
                compute_ensemble(ds, f, default_model=str(step), fuse_cross_duplicates=False)
                for a in cols:
                    cols[a].append(values(ds, f, a) if a != "injected_error" else np.array(
                        ds.values(f"{f}.detections.injected_error", unwind=True), dtype=object))
            return {a: np.concatenate(v) for a, v in cols.items()}

        c = pooled("ensemble_duplicate", ("consistency_duplicate",))
        p, d = c["ensemble_duplicate"], np.clip(np.nan_to_num(c["consistency_duplicate"], nan=0.0), 0, 1)
        ok = np.isfinite(p) | (d > 0)
        w = float(args.dup_p_weight)
        x, y = (w * np.nan_to_num(p, nan=0.0) + d)[ok], (c["injected_error"] == "duplicate")[ok]
        target = _calibration_rate(model["issues"]["duplicate"]["full+boxgrader"], "duplicate", 0.05)
        a, b = _weighted_platt(x, y, target)
        before = reliability(y, np.nan_to_num(p[ok], nan=0.0))[0]
        after = reliability(y, 1 / (1 + np.exp(-(a * x + b))))[0]
        model["duplicate_composition"] = {"platt": {
            "a": round(a, 6), "b": round(b, 6), "p_weight": w, "fitted_on": f"coco128 (dev), seeds {list(args.seeds)}",
            "labels": int(len(y)), "errors": int(y.sum()), "error_rate": round(float(target), 4)}}
        print(f"duplicate composition: a {a:.3f} b {b:.3f}; ECE (in sample) model {before:.3f}, "
              f"composed {after:.3f}")

        step.write_text(json.dumps({k: v for k, v in model.items() if k != "any_composition"}))
        c = pooled("ensemble_any")
        p = c["ensemble_any"]
        ok = np.isfinite(p)
        q = np.clip(p[ok], 1e-6, 1 - 1e-6)   # as grader.ensemble._calibrate_composed
        z, y = np.log(q / (1 - q)), np.array([t not in (None, "none") for t in c["injected_error"]], bool)[ok]
        ds.delete()
    target = _calibration_rate(model["issues"]["any"]["full+boxgrader"], "any", 0.05)
    a, b = _weighted_platt(z, y, target, max_slope=1.0)
    before = reliability(y, 1 / (1 + np.exp(-z)))[0]
    after = reliability(y, 1 / (1 + np.exp(-(a * z + b))))[0]
    model["any_composition"] = {"platt": {"a": round(a, 6), "b": round(b, 6),
                                          "fitted_on": f"coco128 (dev), seeds {list(args.seeds)}",
                                          "labels": int(len(y)), "errors": int(y.sum()),
                                          "error_rate": round(float(target), 4)}}
    Path(args.model).write_text(json.dumps(model, indent=1) + "\n")
    print(f"any composition: a {a:.3f} b {b:.3f}; ECE (in sample) {before:.3f} -> {after:.3f}; "
          f"wrote {args.model}")


def _calibration_rate(entry: dict, issue: str, rate: float) -> float:
    """The error share an issue's Platt scaling is fitted at: the entry's previous calibration
    set's (``platt`` errors / labels), else ``rate`` (``any``: 1 - (1 - rate)^4, four GT issues)."""
    old = entry.get("platt") or {}
    if old.get("error_rate"):
        return float(old["error_rate"])
    if old.get("labels"):
        return old["errors"] / old["labels"]
    return 1 - (1 - rate) ** 4 if issue == "any" else rate


def reference(args) -> None:
    """Write ``reference`` into the model JSON: per score the model reads, ``--levels``
    quantiles of its raw values (abstention floor applied per run, as ``compute_ensemble``
    does) pooled over the dev caches' runs, i.e. where each score fell on the training runs."""
    from grader.ensemble_prior import base_scores
    from grader.score_stats import floor_as_abstention

    runs = _load("dev", args.cache_dir)
    if not runs:
        raise SystemExit(f"no dev caches in {args.cache_dir}: run `collect --split dev` first")
    model = json.loads(Path(args.model).read_text())
    names = sorted({b for entries in model["issues"].values() for e in entries.values()
                    for b in base_scores(e["features"])})
    levels = np.linspace(0.0, 1.0, args.levels)
    quantiles, counts = {}, {}
    for name in names:
        cols = [floor_as_abstention(np.asarray(r["raw"][name], dtype=float), 0.5)
                for r in runs if name in r["raw"]]
        x = np.concatenate(cols) if cols else np.array([])
        x = x[np.isfinite(x)]
        if len(x) < 50:
            print(f"{name}: {len(x)} values, no reference (dataset percentiles stay)")
            continue
        quantiles[name] = [float(f"{v:.6g}") for v in np.quantile(x, levels)]
        counts[name] = int(len(x))
    model["reference"] = {
        "built_from": f"{len(runs)} dev caches (seeds {[r['seed'] for r in runs]}; boxgrader "
                      f"{sorted({r.get('boxgrader') for r in runs})}), rates "
                      f"{[r['rates'] for r in runs]}",
        "levels": int(args.levels), "values": counts, "quantiles": quantiles}
    out = args.out or args.model
    Path(out).write_text(json.dumps(model, indent=1) + "\n")
    print(f"reference of {len(quantiles)} scores ({args.levels} quantiles each) -> {out}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--split", choices=["dev", "val"], default="dev")
    c.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    c.add_argument("--out-dir", default=str(CACHE), help="where the per-seed caches go")
    c.add_argument("--mix", choices=["default", "real"], default="default",
                   help="real: today's error types plus the real-looking ones (REAL_MIX_RATES)")
    c.add_argument("--boxgrader", choices=["auto", "off"], default="auto",
                   help="auto: out-of-fold box graders on dev (train-folds), grade()'s shipped "
                        "one on val; off: no box grader")
    f = sub.add_parser("fit")
    f.add_argument("--hgb", nargs="*", default=["any"],
                   help="issues whose full variant also gets a (reference) HGB in the CV")
    f.add_argument("--drop", nargs="*", default=[],
                   help="feature names to leave out (ablation), e.g. consistency:consistency_outlier:missing")
    f.add_argument("--kind-weights", nargs="*", default=[],
                   help="KIND=W: training weight of injected errors of a real-looking kind "
                        "(e.g. cross_duplicate=3), so 'any' follows the real errors' make-up")
    f.add_argument("--hinges", nargs="*", default=list(HINGES),
                   help="hinge features of a score's last percentiles (<score>:top<NN>), added "
                        "where the score is an input")
    f.add_argument("--cache-dir", default=str(CACHE),
                   help="dev caches for the variants without the box grader")
    f.add_argument("--box-cache-dir", default=None,
                   help="dev caches (collected with out-of-fold box graders) for the variants "
                        "with it; default: --cache-dir")
    f.add_argument("--out", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    t = sub.add_parser("train-folds")
    t.add_argument("--folds", type=int, default=BOX_FOLDS)
    t.add_argument("--only", type=int, nargs="*", default=None, help="train only these folds")
    w = sub.add_parser("wiring")
    w.add_argument("--seed", type=int, default=100)
    w.add_argument("--expect", default="full+boxgrader")
    e = sub.add_parser("eval")
    e.add_argument("--cache-dir", default=str(CACHE), help="val caches")
    e.add_argument("--model", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    e.add_argument("--fuse", action="store_true",
                   help="fuse consistency_xdup into duplicate/any by the noisy-OR, as "
                        "compute_ensemble(fuse_cross_duplicates=True)")
    a = sub.add_parser("anchor")
    a.add_argument("--cache-dir", default=str(CACHE), help="dev caches (coco128)")
    a.add_argument("--model", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    a.add_argument("--out", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    a.add_argument("--issues", nargs="+", default=["duplicate", "any"])
    a.add_argument("--add", nargs="+", default=["consistency:consistency_xdup", *HINGES])
    a.add_argument("--kind-weights", nargs="*", default=[])
    a.add_argument("--C", type=float, default=1.0)
    k = sub.add_parser("calibrate")
    k.add_argument("--dataset", default="RL-graded-dev-0",
                   help="a coco128 dataset graded with injected errors (its truth recorded)")
    k.add_argument("--field", default="noisy")
    k.add_argument("--cache-dir", default=None,
                   help="calibrate on these dev caches (pooled) instead of a graded dataset")
    k.add_argument("--issues", nargs="*", default=None, help="only these issues (default: all)")
    k.add_argument("--transfer-from", default=None,
                   help="with --cache-dir: match this model's Platt-scaled log-odds (same issue and "
                        "variant) by least squares instead of fitting the scale again")
    k.add_argument("--today-only", action="store_true",
                   help="with --cache-dir: leave the real-looking kinds' labels out")
    k.add_argument("--reference", action="store_true",
                   help="with --cache-dir: the model reads the raw scores against its reference "
                        "(as compute_ensemble does), not the caches' percentiles")
    k.add_argument("--rate", type=float, default=0.05,
                   help="with --cache-dir: error share per issue where the entry records none")
    k.add_argument("--model", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    ka = sub.add_parser("calibrate-any")
    ka.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ka.add_argument("--model", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    ka.add_argument("--dup-p-weight", type=float, default=0.25,
                    help="w of the duplicate composition sigmoid(a (w p + d) + b)")
    r = sub.add_parser("reference")
    r.add_argument("--cache-dir", default=str(CACHE), help="dev caches (out-of-fold box graders)")
    r.add_argument("--levels", type=int, default=1001)
    r.add_argument("--model", default=str(REPO / "grader" / "models" / "default_ensemble.json"))
    r.add_argument("--out", default=None, help="default: --model")
    args = ap.parse_args(argv)
    if args.cmd == "reference":
        reference(args)
    elif args.cmd == "calibrate-any":
        calibrate_any(args)
    elif args.cmd == "calibrate":
        calibrate(args)
    elif args.cmd == "collect":
        collect(args)
    elif args.cmd == "wiring":
        wiring(args)
    elif args.cmd == "train-folds":
        train_folds(args)
    elif args.cmd == "anchor":
        anchor(args)
    elif args.cmd == "fit":
        fit(args)
    else:
        evaluate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
