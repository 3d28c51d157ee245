"""A simulated curator: does the queue get better as it learns from each review decision?

    .venv/bin/python bench/review_learning.py                       # coco128 (development)
    .venv/bin/python bench/review_learning.py --split val --items 400
    .venv/bin/python bench/review_learning.py --split coco128-custom --items 300   # own classes

One real dataset, ~5 % of each error type injected (truth recorded), ``grader.grade()`` with
its defaults. Then an oracle curator works down the queue (``ensemble_any``, highest first),
answering from the injected truth through the real fix API (:mod:`grader.review.fixes`): a
clean label is accepted; a swapped one relabelled to its true class; a moved box replaced; a
spurious box or a duplicate deleted. Two arms over the same start:

- **static**: the order ``grade()`` wrote, never changed;
- **learning**: after every ``--batch`` decisions the queue is re-ranked as the review panel
  does it (:func:`grader.ensemble.refit_if_due`: the labels-only consistency judge re-scored,
  so a deleted duplicate's partner loses its pair, then the ensemble re-fitted on the
  decisions) and the items not yet seen are re-ordered by the new ``ensemble_any``.

Printed: precision (share of errors) of each successive block of ``--block`` items in both
arms and their ratio, the errors found by every 100th item (finding errors sooner leaves
fewer for the later blocks), and the reliability diagram / ECE of the first ``ensemble_any``.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import _harness as H
from _harness import bench_db, load_split

H.one_thread_env()

FIELD = "noisy"


def _queue(ds) -> list[tuple[str, str, str, float]]:
    """Every label not reviewed yet, most suspect first: (sample id, label id, truth, score)."""
    from grader.noise import TRUTH_ATTR
    from grader.scores import REVIEWED_TAGS

    sids, lids, truth, score, tags = ds.values(
        ["id", f"{FIELD}.detections.id", f"{FIELD}.detections.{TRUTH_ATTR}",
         f"{FIELD}.detections.ensemble_any", f"{FIELD}.detections.tags"])
    rows = []
    for s, ls_, ts, ss, tg in zip(sids, lids, truth, score, tags):
        for l, t, sc, tt in zip(ls_ or [], ts or [], ss or [], tg or []):
            if set(tt or ()) & set(REVIEWED_TAGS):
                continue
            rows.append((s, l, t, -1.0 if sc is None else float(sc)))
    rows.sort(key=lambda r: -r[3])
    return rows


def _decide(ds, sid: str, lid: str, truth: str) -> None:
    """The oracle's decision, through the same calls the review panel makes."""
    from grader.review import fixes

    if truth == "swap":
        src = ds.select(sid).values(FIELD)[0]
        d = next(d for d in src.detections if d.id == lid)
        fixes.relabel(ds, sid, lid, new_label=d["injected_from"], field=FIELD)
    elif truth == "badloc":
        src = ds.select(sid).values(FIELD)[0]
        d = next(d for d in src.detections if d.id == lid)
        x, y, w, h = d.bounding_box   # the true box is gone; any corrected box is a fix
        fixes.replace_box(ds, sid, lid, field=FIELD, box=[x, y, w * 0.99, h * 0.99])
    elif truth in ("spurious", "duplicate"):
        fixes.delete_label(ds, sid, lid, field=FIELD)
    else:
        fixes.accept_label(ds, sid, lid, field=FIELD)


def _blocks(hits: list[int], block: int) -> list[float]:
    return [float(np.mean(hits[i:i + block])) for i in range(0, len(hits) - block + 1, block)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", choices=["dev", "val", "raccoon", "coco128-custom"], default="dev",
                    help="raccoon / coco128-custom: classes no shipped model knows "
                         "(bench/custom_classes.py's datasets; the ensemble is chosen on a copy)")
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--items", type=int, default=400, help="decisions the curator takes")
    ap.add_argument("--batch", type=int, default=25, help="decisions between re-rankings")
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--reuse", action="store_true",
                    help="keep the graded start in the database (FIFTYONE_DATABASE_URI) and "
                         "reuse it on the next run with the same split and seed")
    args = ap.parse_args(argv)
    with bench_db():
        from grader.ensemble import refit_if_due
        from grader.evaluate import reliability
        from grader.noise import CLEAN, DEFAULT_RATES, inject_errors
        from grader.pipeline import grade
        from grader.review.log import clear_fix_log

        import fiftyone as fo

        kept = f"RL-graded-{args.split}-{args.seed}"
        if args.reuse and fo.dataset_exists(kept):
            # The graded start of an earlier run (a database given by FIFTYONE_DATABASE_URI).
            ds = fo.load_dataset(kept).clone()
            print(f"{args.split}: reusing the graded dataset '{kept}'")
        else:
            if args.split in ("dev", "val"):
                ds = load_split(args.split)
            else:
                from custom_classes import load

                ds = load(args.split)
            rates = {t: args.rate for t in DEFAULT_RATES}
            if len(ds.distinct("ground_truth.detections.label")) < 2:
                rates.pop("swap", None)   # one class: nothing to swap to
            rep = inject_errors(ds, "ground_truth", FIELD, rates=rates, seed=args.seed,
                                overwrite=True)
            t0 = time.time()
            g = grade(ds, gt_field=FIELD)
            print(f"{args.split}: {len(ds)} images, {ds.count(FIELD + '.detections')} labels; "
                  f"injected {rep.info['injected']}; grade() {time.time() - t0:.1f} s; learner "
                  + ", ".join(f"{i}={v['chosen']}"
                              for i, v in g.reports["ensemble"].info["learner"].items()))
            if args.reuse:
                if fo.dataset_exists(kept):
                    fo.delete_dataset(kept)
                ds.clone(kept, persistent=True)
        start = _queue(ds)
        y0 = np.array([t != CLEAN for _, _, t, _ in start])
        ece, rows = reliability(y0, [s for *_, s in start])
        print(f"ensemble_any as a probability: ECE {ece:.3f}; reliability (bin, mean p, error rate, n): "
              + "; ".join(f"{b:.1f} {p:.3f} {e:.3f} {n}" for b, p, e, n in rows))
        static = [int(t != CLEAN) for _, _, t, _ in start[:args.items]]

        clear_fix_log(ds)
        hits, refits, t_refit, er = [], 0, [], g.reports["ensemble"] if not args.reuse else None
        queue = start
        while len(hits) < args.items and queue:
            for sid, lid, truth, _ in queue[:args.batch]:
                _decide(ds, sid, lid, truth)
                hits.append(int(truth != CLEAN))
                if len(hits) >= args.items:
                    break
            t1 = time.time()
            # as the review panel re-ranks: the labels-only judge re-scored, then the ensemble
            er = refit_if_due(ds, FIELD, every=1) or er
            t_refit.append(time.time() - t1)
            refits += 1
            print(f"  after {len(hits)} decisions: " + ", ".join(
                f"{i}={v['chosen']}" for i, v in er.info["learner"].items()))
            queue = _queue(ds)
        print(f"learning arm: {refits} re-rankings, {np.mean(t_refit):.1f} s each; last learner "
              + ", ".join(f"{i}={v['chosen']}" for i, v in er.info["learner"].items())
              + f"; reviews {er.info.get('reviews')}")
        bs, bl = _blocks(static, args.block), _blocks(hits, args.block)
        print(f"\n== precision of each block of {args.block} items ({args.split}, seed {args.seed}) ==")
        print(f"{'items':>10s} {'static':>8s} {'learning':>9s} {'ratio':>7s}")
        for i, (a, b) in enumerate(zip(bs, bl)):
            lo, hi = i * args.block + 1, (i + 1) * args.block
            print(f"{lo:>4d}-{hi:<5d} {a:8.3f} {b:9.3f} {b / a if a else float('inf'):7.2f}")
        k0, k1 = 200, min(300, args.items)
        if k1 > k0 and len(hits) >= k1:
            a, b = np.mean(static[k0:k1]), np.mean(hits[k0:k1])
            print(f"items {k0 + 1}-{k1}: static {a:.3f}, learning {b:.3f}, ratio "
                  f"{b / a if a else float('inf'):.2f}")
        print(f"errors found in the first {len(hits)}: static {sum(static)}, learning {sum(hits)}")
        # finding errors sooner empties later blocks: the running count says what a curator gets
        print("errors found by item " + ", ".join(
            f"{k}: {sum(static[:k])} vs {sum(hits[:k])}" for k in range(100, len(hits) + 1, 100))
              + " (static vs learning)")
        ds.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
