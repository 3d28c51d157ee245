"""Which views and which quality model for the box grader: the ablation behind its defaults.

    .venv/bin/python bench/boxgrader_views.py cache            # features per view, coco128 only
    .venv/bin/python bench/boxgrader_views.py fit --views 416 832 zoom --model trees --seeds 0 1
    .venv/bin/python bench/boxgrader_views.py fit --views 416 --model mlp

Tuning only, on coco128 (never coco128-val): the image split of ``bench/boxgrader.py --dev``
(80 % of the images to train, 20 % held out). ``cache`` synthesises the training examples
(1 good, 8 bad, 8 background per GT object of >= 8 px), the held-out images' protocol
examples (one of each per object of >= 20 px) and the held-out images' boxes with errors
injected by ``grader.noise.inject_errors`` (seeds 0-4), and stores for each box set the
features of each view: ``416`` and ``832`` (the full image at that input, edges + evidence +
class probabilities + geometry) and ``zoom`` (the box's own 256 px crop). ``fit`` trains the
quality model on the chosen views (``trees``: :func:`fit_quality_model`; ``mlp``: the
grader's MLP head), picks ``good_threshold`` on 15 % of the training images at <= ``--max-fpr``
(default 0.05, the table in docs/clipgrader.md; the grader itself now aims at 0.04), or on
out-of-fold predictions of all of them with ``--threshold-cv K``, and
prints 3-way accuracy, FPR and the confusion matrix on the protocol examples, and AUROC of
``p_bad`` / ``p_not_good`` for badloc and of ``p_background`` for spurious on the injected
errors. ``--per-object B G`` keeps only the first B bad and G background examples per object.
"""
from __future__ import annotations

import argparse
import functools
import os
import pickle
import sys
import time

import numpy as np

import _harness as H
from _harness import REPO

CACHE = REPO / "out" / "boxgrader-views"
QUALITY = {"good": 0, "bad": 1, "background": 2}


@functools.lru_cache(maxsize=None)
def _backbone(view: str):
    from grader.judges.boxgrader.features import CORE_GROUPS, YoloxFeatures

    if view == "zoom":
        return YoloxFeatures(groups=("zoom",))
    return YoloxFeatures(groups=CORE_GROUPS, input_size=int(view))


def cache(args) -> None:
    H.one_thread_env()   # (as importing eval_judges for these did)
    from _harness import load_split, start_db as _start_db

    server = _start_db()
    try:
        sets = _box_sets(load_split("dev"))
    finally:
        if server is not None:
            server.stop()
    CACHE.mkdir(parents=True, exist_ok=True)
    from grader.images import load_rgb

    for view in args.views:
        bb = _backbone(view)
        for name, s in sets.items():
            t0 = time.perf_counter()
            by: dict[str, list[int]] = {}
            for i, p in enumerate(s["paths"]):
                by.setdefault(p, []).append(i)
            X = np.zeros((len(s["paths"]), bb.dim), np.float32)
            for p, idx in by.items():
                X[idx] = bb.box_features(bb.image_features(load_rgb(p)), s["boxes"][idx])
            s[f"X_{view}"] = X
            print(f"{view:>5s} {name:9s} {X.shape} {time.perf_counter() - t0:.1f} s", flush=True)
    with open(CACHE / "sets.pkl", "wb") as f:
        pickle.dump(sets, f)


def _box_sets(ds) -> dict[str, dict]:
    """The training, protocol and injected-error box sets of the dev split (see the module)."""
    from grader.boxes import BOX_DEGENERATE, rel_xywh_to_abs_xyxy, sanitize_rel_boxes
    from grader.fields import read_detections
    from grader.judges.clipgrader.synth import synthesize
    from grader.noise import inject_errors

    ids = sorted(ds.values("id"))
    np.random.default_rng(1234).shuffle(ids)       # bench/boxgrader.py --dev's split
    held = ids[: len(ids) // 5]
    sets = {}

    def from_items(items):
        return dict(paths=[it.filepath for it in items], boxes=np.array([it.box_xyxy for it in items]),
                    labels=[it.label for it in items], truth=[it.quality for it in items],
                    group=[it.sample_id for it in items],
                    obj=[it.source_label_id for it in items])

    sets["train"] = from_items(synthesize(ds.exclude(held), "ground_truth", min_size=8, seed=0,
                                          per_object=(1, 8, 8)))
    sets["protocol"] = from_items(synthesize(ds.select(held), "ground_truth", min_size=20,
                                             seed=12345))
    rows = {k: [] for k in ("paths", "boxes", "labels", "truth", "group")}
    for seed in range(5):
        inject_errors(ds.select(held), "ground_truth", "noisy", seed=seed, overwrite=True)
        t = read_detections(ds.select(held), "noisy")
        err = ds.select(held).values("noisy.detections.injected_error")
        for i in range(len(t)):
            if not t.ids[i]:
                continue
            clipped, status = sanitize_rel_boxes(t.boxes[i])
            boxes = rel_xywh_to_abs_xyxy(clipped, t.widths[i], t.heights[i])
            for j in range(len(t.ids[i])):
                if status[j] != BOX_DEGENERATE:
                    for k, v in (("paths", t.filepaths[i]), ("boxes", boxes[j]),
                                 ("labels", t.labels[i][j]), ("truth", err[i][j]),
                                 ("group", f"{seed}:{t.sample_ids[i]}")):
                        rows[k].append(v)
    rows["boxes"] = np.array(rows["boxes"])
    sets["injected"] = rows
    ds.delete()
    return sets


def _inputs(s: dict, views, det_index) -> tuple[np.ndarray, np.ndarray]:
    from grader.judges.boxgrader.model import label_inputs

    X = np.concatenate([s[f"X_{v}"] for v in views], 1)
    det, at = [], 0
    for v in views:   # where each view's backbone puts the detector's class probabilities
        sl = _backbone(v).det_class_slices()[0]
        det.append(slice(at + sl.start, at + sl.stop))
        at += s[f"X_{v}"].shape[1]
    return X, label_inputs(X, s["labels"], det_index, det)


def _mlp(X, lab, q, tr, seed, epochs=15):
    """The grader's MLP head (quality part), trained as train_boxgrader trains it."""
    import torch
    from torch import nn

    from grader.judges.boxgrader import BoxGraderHead

    torch.manual_seed(seed)
    head = BoxGraderHead(X.shape[1], 1, label_dim=lab.shape[1])
    Xt, Lt, qt = torch.from_numpy(X), torch.from_numpy(lab), torch.from_numpy(q)
    head.mean.copy_(Xt[tr].mean(0))
    head.std.copy_(Xt[tr].std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    counts = np.bincount(q[tr], minlength=3)
    w = torch.tensor(counts.sum() / (3 * np.maximum(counts, 1)), dtype=torch.float32)
    for epoch in range(epochs):
        head.train()
        perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=torch.Generator().manual_seed(epoch))]
        for b in perm.split(256):
            loss = nn.functional.cross_entropy(head(Xt[b], Lt[b])[0], qt[b], weight=w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    head.eval()

    def proba(Xe, le):
        with torch.no_grad():
            return torch.softmax(head(torch.from_numpy(Xe), torch.from_numpy(le))[0], 1).numpy().astype(np.float64)
    return proba


def fit(args) -> None:
    from grader.evaluate import auroc
    from grader.judges.boxgrader.model import decide, fit_quality_model, quality_proba
    from grader.judges.boxgrader.train import choose_good_threshold
    from grader.judges.boxgrader.features import default_detector_path
    from grader.detectors.base import read_names

    with open(CACHE / "sets.pkl", "rb") as f:
        sets = pickle.load(f)
    names = read_names(os.path.join(os.path.dirname(default_detector_path()), "coco.names"))
    det_index = {c: i for i, c in enumerate(names)}
    tr_set = sets["train"]
    keep = np.arange(len(tr_set["paths"]))
    if args.per_object:
        nb, ng = args.per_object
        seen: dict[tuple[str, str], int] = {}
        keep = []
        for i, (o, t) in enumerate(zip(tr_set["obj"], tr_set["truth"])):
            seen[(o, t)] = seen.get((o, t), 0) + 1
            if t == "good" or seen[(o, t)] <= (nb if t == "bad" else ng):
                keep.append(i)
        keep = np.array(keep)
    X, lab = _inputs(tr_set, args.views, det_index)
    X, lab = X[keep], lab[keep]
    q = np.array([QUALITY[t] for t in tr_set["truth"]])[keep]
    groups = np.array(tr_set["group"])[keep]
    Xp, lp = _inputs(sets["protocol"], args.views, det_index)
    qp = np.array([QUALITY[t] for t in sets["protocol"]["truth"]])
    Xi, li = _inputs(sets["injected"], args.views, det_index)
    err = np.array(sets["injected"]["truth"])
    for seed in args.seeds:
        t0 = time.perf_counter()
        ids = sorted(set(groups))
        np.random.default_rng(seed).shuffle(ids)
        val = np.isin(groups, ids[: round(len(ids) * 0.15)])
        tr, va = np.nonzero(~val)[0], np.nonzero(val)[0]
        if args.model == "trees":
            m = fit_quality_model(X[tr], lab[tr], q[tr], seed=seed, max_leaf_nodes=args.leaves,
                                  min_samples_leaf=args.min_leaf, max_iter=args.rounds)
            proba = lambda Xe, le: quality_proba(m, Xe, le)  # noqa: E731
        else:
            proba = _mlp(X, lab, q, tr, seed)
        if args.threshold_cv:   # threshold on out-of-fold predictions of every training image
            fold_of = {g: i % args.threshold_cv for i, g in enumerate(ids)}   # ids: shuffled
            folds = np.array([fold_of[g] for g in groups])
            oof = np.zeros((len(q), 3))
            for k in range(args.threshold_cv):
                mk = fit_quality_model(X[folds != k], lab[folds != k], q[folds != k], seed=seed,
                                       max_leaf_nodes=args.leaves, min_samples_leaf=args.min_leaf,
                                       max_iter=args.rounds)
                oof[folds == k] = quality_proba(mk, X[folds == k], lab[folds == k])
            thr = choose_good_threshold(oof, q, args.max_fpr)
        else:
            thr = choose_good_threshold(proba(X[va], lab[va]), q[va], args.max_fpr)
        pred = decide(proba(Xp, lp), thr)
        conf = np.zeros((3, 3), int)
        np.add.at(conf, (qp, pred), 1)
        pi = proba(Xi, li)
        row = {"acc": (pred == qp).mean(), "fpr": (pred[qp != 0] == 0).mean()}
        for name, e, col in (("badloc p_bad", "badloc", pi[:, 1]),
                             ("badloc p_not_good", "badloc", 1 - pi[:, 0]),
                             ("spurious p_background", "spurious", pi[:, 2])):
            m_ = (err == e) | (err == "none")
            row[name] = auroc((err[m_] == e).astype(int), col[m_])
        print(f"views {'+'.join(args.views)} model {args.model} seed {seed} per_object "
              f"{args.per_object or (8, 8)} threshold {thr:.2f}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in row.items())
              + f"; max_fpr {args.max_fpr} cv {args.threshold_cv}; confusion {conf.tolist()}; {time.perf_counter() - t0:.0f} s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("--views", nargs="+", default=["416", "832", "zoom"])
    f = sub.add_parser("fit")
    f.add_argument("--views", nargs="+", default=["416", "832", "zoom"])
    f.add_argument("--model", choices=["trees", "mlp"], default="trees")
    f.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    f.add_argument("--leaves", type=int, default=15)
    f.add_argument("--min-leaf", type=int, default=40)
    f.add_argument("--rounds", type=int, default=200)
    f.add_argument("--per-object", type=int, nargs=2, default=None, metavar=("BAD", "BG"))
    f.add_argument("--max-fpr", type=float, default=0.05, help="FPR the threshold aims at")
    f.add_argument("--threshold-cv", type=int, default=0,
                   help="choose the threshold on K-fold out-of-fold predictions (trees only)")
    args = ap.parse_args(argv)
    (cache if args.cmd == "cache" else fit)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
