"""Real label errors on unchanged coco128: precision@k of each ranking against boxes checked by eye.

    OMP_NUM_THREADS=1 .venv/bin/python bench/real_errors.py               # grade once, then cached
    OMP_NUM_THREADS=1 .venv/bin/python bench/real_errors.py --rescore     # re-run consistency + ensemble only
    OMP_NUM_THREADS=1 .venv/bin/python bench/real_errors.py --render      # + contact sheets of unchecked suspects
    OMP_NUM_THREADS=1 .venv/bin/python bench/real_errors.py --val-pairs   # held-out cross-class pair table only

coco128's own labels (no injected errors) are graded with ``grader.grade()``'s defaults. The
dataset, with the detector's predictions and every judge's scores, lives in a persistent mongod
under ``--cache`` (``out/real_errors/db``), so later runs only re-read it (``--regrade`` grades
again; ``--rescore`` re-runs only the consistency judge and the ensemble, e.g. after changing
them). Verdicts: ``bench/data/real_errors_coco128.json`` (a copy of
``../shared/data/coco128/real_errors.json`` extended with further boxes checked by eye the same
way; same fields). An item matches a label of the same image when the relative boxes' IoU is
>= 0.9 (``kind`` "gt": a ground-truth box; "candidate": an overlooked candidate).

Printed: precision@10/20/40 of GT suspects (``verdict == "error"``; ``+amb`` also counts
"ambiguous") for ``ensemble_any`` and key single scores, beside a random control (mean over
``--draws`` random orders; unchecked boxes count as not errors, as they do for every ranking, so
it is the known-error rate), precision@10/20 of overlooked candidates, the median rank of the
known real GT errors per ranking, the unchecked items of each top 40 (so they can be checked),
and the table of every different-class GT pair at IoU >= 0.6 with its verdict and whether
``consistency_xdup`` flags it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import _harness as H
from _harness import DATA, REPO, load_split

H.one_thread_env()   # (as importing eval_judges for these did)

VERDICTS = REPO / "bench" / "data" / "real_errors_coco128.json"
SHARED_VERDICTS = DATA / "coco128" / "real_errors.json"
DATASET = "lg-real-errors-coco128"
KS = (10, 20, 40)
#: GT rankings: name -> (attributes, how to combine, direction). "min" of low-is-suspect scores.
GT_RANKINGS = {
    "ensemble_any": (("ensemble_any",), "max", True),
    "cleanlab min(badloc,swap)": (("cleanlab_badloc", "cleanlab_swap"), "min", False),
    "consistency_xdup": (("consistency_xdup",), "max", True),
    "consistency_duplicate": (("consistency_duplicate",), "max", True),
    "ensemble_duplicate": (("ensemble_duplicate",), "max", True),
    "boxgrader_p_not_good": (("boxgrader_p_not_good",), "max", True),
    # Derived in derive_columns(): what the lead's ensemble could do with these helpers.
    "ensemble_any, tiny shrunk": (("ens_sized",), "max", True),
    "max pct(ensemble_any, xdup)": (("ens_pct", "xdup_pct"), "max", True),
    "max pct(ens tiny shrunk, xdup)": (("ens_sized_pct", "xdup_pct"), "max", True),
}
OV_RANKINGS = {
    "overlooked_score": (("overlooked_score",), "max", True),
    "cleanlab_overlooked": (("cleanlab_overlooked",), "min", False),
}
#: Seed of the fixed random sample of GT boxes checked by eye (the unbiased random control).
RANDOM_SAMPLE_SEED = 2026
#: Flag threshold of consistency_xdup for the pair table (the score's default tag threshold).
XDUP_FLAG = 0.5


def iou_rel(a, b) -> float:
    """IoU of two relative xywh boxes."""
    iw = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _start_cached_db(path: Path):
    """A mongod on a persistent dbpath, so the graded dataset survives between runs."""
    sys.path.insert(0, str(REPO / "tests"))
    from mongod_helper import MongodServer

    srv = MongodServer(path).start()
    os.environ["FIFTYONE_DATABASE_URI"] = srv.uri
    return srv


def graded_dataset(regrade: bool, rescore: bool, ensemble_opts: dict | None = None):
    """coco128 graded with grade()'s defaults (cached in the persistent database);
    ``ensemble_opts``: keyword arguments of ``compute_ensemble`` for ``rescore`` (e.g. another
    ``default_model``)."""
    import fiftyone as fo

    if not regrade and fo.dataset_exists(DATASET):
        ds = fo.load_dataset(DATASET)
        if rescore:
            from grader.ensemble import compute_ensemble
            from grader.judges.consistency import run_consistency

            t0 = time.time()
            run_consistency(ds, "ground_truth")
            rep = compute_ensemble(ds, "ground_truth", **(ensemble_opts or {}))
            print(f"ensemble_any: {rep.info['learner'].get('any')}; fused {rep.info.get('fused')}")
            print(f"re-scored consistency + ensemble in {time.time() - t0:.1f} s")
        return ds
    from grader.pipeline import grade

    if fo.dataset_exists(DATASET):
        fo.delete_dataset(DATASET)
    src = load_split("dev")
    ds = src.clone(DATASET)
    ds.persistent = True
    src.delete()
    t0 = time.time()
    g = grade(ds)
    print(f"grade() {time.time() - t0:.1f} s; ran {sorted(g.reports)}; not run {g.not_run}")
    return ds


def read_field(ds, field: str, attrs) -> list[dict]:
    """One row per detection of ``field``: image file, id, label, box and ``attrs``."""
    keys = ["filepath", f"{field}.detections.id", f"{field}.detections.label",
            f"{field}.detections.bounding_box", f"{field}.detections.iscrowd"]
    schema = ds.get_field_schema(flat=True)
    present = [a for a in attrs if f"{field}.detections.{a}" in schema]
    vals = ds.values(keys + [f"{field}.detections.{a}" for a in present])
    rows = []
    for s, fp in enumerate(vals[0]):
        for j, lid in enumerate(vals[1][s] or []):
            r = {"image": os.path.basename(fp), "filepath": fp, "id": lid,
                 "label": vals[2][s][j], "box": list(vals[3][s][j]),
                 "crowd": bool((vals[4][s] or [None] * (j + 1))[j])}
            for a, col in zip(present, vals[5:]):
                v = col[s][j] if col[s] is not None else None
                r[a] = float(v) if v is not None else np.nan
            for a in attrs:
                r.setdefault(a, np.nan)
            rows.append(r)
    return rows


def derive_columns(ds, rows: list[dict]) -> None:
    """Columns the helpers give (grader.visibility): ``ens_sized`` = ensemble_any with tiny
    boxes pulled to the median by their pixel area; ``*_pct``: percentiles (for an even
    interleave of two rankings)."""
    from grader.ensemble import percentiles
    from grader.visibility import label_pixel_areas, shrink_unreliable, size_reliability

    area = label_pixel_areas(ds, "ground_truth", [r["id"] for r in rows])
    ens = np.array([r["ensemble_any"] for r in rows], dtype=float)
    sized = shrink_unreliable(ens, size_reliability(area))
    xdup = np.array([r["consistency_xdup"] for r in rows], dtype=float)
    for r, a, s, pe, ps, px in zip(rows, area, sized, percentiles(ens), percentiles(sized),
                                   percentiles(xdup)):
        r.update(area_px=float(a), ens_sized=float(s), ens_pct=float(pe), ens_sized_pct=float(ps),
                 xdup_pct=float(px))


def match(rows: list[dict], items: list[dict], kind: str) -> list[dict | None]:
    """Per row, the verdict item of the same image and kind with box IoU >= 0.9 (or None)."""
    by_img: dict[str, list[dict]] = {}
    for it in items:
        if it["kind"] == kind:
            by_img.setdefault(it["image"], []).append(it)
    out = []
    for r in rows:
        best, bi = None, 0.9
        for it in by_img.get(r["image"], []):
            v = iou_rel(r["box"], it["box"])
            if v >= bi:
                best, bi = it, v
        out.append(best)
    return out


def ranking(rows: list[dict], attrs, how: str, higher: bool) -> np.ndarray:
    """Order of the rows the ranking scores, most suspect first (rows without the score are not
    proposed: a ranking of 3 candidates has a top 10 of 3)."""
    x = np.array([[r[a] for a in attrs] for r in rows], dtype=float)
    with np.errstate(all="ignore"):
        s = np.nanmax(x, axis=1) if how == "max" else np.nanmin(x, axis=1)
    s = s if higher else -s
    ok = np.nonzero(np.isfinite(s))[0]
    return ok[np.argsort(-s[ok], kind="stable")]


def precision_at(order: np.ndarray, hit: np.ndarray, k: int) -> float:
    top = order[:k]
    return float(hit[top].sum()) / max(1, len(top))


def _verdict_arrays(matched):
    err = np.array([m is not None and m["verdict"] == "error" for m in matched])
    amb = np.array([m is not None and m["verdict"] == "ambiguous" for m in matched])
    chk = np.array([m is not None for m in matched])
    return err, amb, chk


def error_groups(rows: list[dict], matched) -> np.ndarray:
    """Per row, an id of the distinct real error it belongs to (-1: none): the boxes of one
    duplicate pair (same image, IoU >= 0.3, both verdict error / duplicate) share one, and so do
    candidates for the same missed object (same image and class, IoU >= 0.3)."""
    gid = np.full(len(rows), -1)
    err = [i for i, m in enumerate(matched) if m is not None and m["verdict"] == "error"]
    for i in err:
        gid[i] = i
    for a in err:
        for b in err:
            if (b > a and rows[a]["image"] == rows[b]["image"]
                    and (matched[a]["type"] == matched[b]["type"] == "duplicate"
                         or (matched[a]["type"] == matched[b]["type"] == "missed"
                             and rows[a]["label"] == rows[b]["label"]))
                    and iou_rel(rows[a]["box"], rows[b]["box"]) >= 0.3):
                gid[gid == gid[b]] = gid[a]
    return gid


def report_rankings(title: str, rows, matched, rankings, ks, draws: int, rng, unchecked: dict,
                    eye_sample: int = 0):
    err, amb, chk = _verdict_arrays(matched)
    gid = error_groups(rows, matched)
    n = len(rows)
    print(f"\n== {title}: {n} labels; known errors {int(err.sum())} "
          f"({len(set(gid[gid >= 0]))} distinct), ambiguous {int(amb.sum())}, checked {int(chk.sum())} ==")
    head = " ".join(f"{'P@' + str(k):>6s} {'+amb':>5s} {'chk':>4s}" for k in ks)
    print(f"{'ranking':31s} {head}  {'median rank of errors':>22s}  distinct errors in top "
          + "/".join(str(k) for k in ks))
    med = {}
    for name, (attrs, how, higher) in rankings.items():
        if all(np.isnan(r[a]) for r in rows for a in attrs):
            print(f"{name:31s} (not present)")
            continue
        if not len(ranking(rows, attrs, how, higher)):
            continue
        order = ranking(rows, attrs, how, higher)
        # Unscored rows rank after every scored one (for the median rank of known errors).
        rank = np.full(n, len(order) + (n - len(order) + 1) / 2.0)
        rank[order] = np.arange(1, len(order) + 1)
        cells = " ".join(f"{precision_at(order, err, k):6.3f} {precision_at(order, err | amb, k):5.2f} "
                         f"{int(chk[order[:k]].sum()):4d}" for k in ks)
        m = float(np.median(rank[err])) if err.any() else float("nan")
        med[name] = m
        dist = "/".join(str(len(set(gid[order[:k]][gid[order[:k]] >= 0]))) for k in ks)
        print(f"{name:31s} {cells}  {m:8.0f} of {n} (top {100 * m / n:2.0f}%)  {dist}")
        unchecked[name] = [rows[i] for i in order[:max(ks)] if not chk[i]]
    if eye_sample:
        # A fixed random sample checked by eye like the suspects: an unbiased random control
        # (the draws below count unchecked boxes as clean, a lower bound).
        pick = np.random.default_rng(RANDOM_SAMPLE_SEED).permutation(n)[:eye_sample]
        unchecked["random sample"] = [rows[i] for i in pick if not chk[i]]
        print(f"{'random sample by eye':31s} {err[pick].mean():6.3f} {(err | amb)[pick].mean():5.2f} "
              f"{int(chk[pick].sum()):4d}  (one fixed draw of {eye_sample}, seed {RANDOM_SAMPLE_SEED})")
    rand = np.array([[precision_at(rng.permutation(n), err, k) for k in ks] for _ in range(draws)])
    randa = np.array([[precision_at(rng.permutation(n), err | amb, k) for k in ks] for _ in range(draws)])
    cells = " ".join(f"{rand[:, i].mean():6.3f} {randa[:, i].mean():5.2f} {'':4s}" for i in range(len(ks)))
    print(f"{'random (' + str(draws) + ' draws)':31s} {cells}  {(n + 1) / 2:8.0f} of {n}")
    return med


def pair_table(rows, matched, items) -> None:
    """Every different-class GT pair at IoU >= 0.6: verdict and whether consistency_xdup flags it."""
    by_img: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        if not r["crowd"]:
            by_img.setdefault(r["image"], []).append(i)
    pairs = []
    for img, idx in by_img.items():
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                ra, rb = rows[idx[a]], rows[idx[b]]
                if ra["label"] == rb["label"]:
                    continue
                v = iou_rel(ra["box"], rb["box"])
                if v >= 0.6:
                    pairs.append((v, idx[a], idx[b]))
    print(f"\n== different-class GT pairs at IoU >= 0.6: {len(pairs)} "
          f"(flag: max consistency_xdup of the pair >= {XDUP_FLAG}) ==")
    print(f"{'image':18s} {'pair':28s} {'IoU':>5s} {'verdict':10s} {'xdup a':>7s} {'xdup b':>7s} flag")
    tally = {}
    for v, a, b in sorted(pairs, reverse=True):
        ma, mb = matched[a], matched[b]
        vs = [m["verdict"] for m in (ma, mb) if m is not None]
        verdict = ("duplicate" if "error" in vs else "legit" if vs and all(x == "not_error" for x in vs)
                   else "ambiguous" if vs else "unchecked")
        xa, xb = rows[a]["consistency_xdup"], rows[b]["consistency_xdup"]
        flag = np.nanmax([xa, xb, -1]) >= XDUP_FLAG
        tally.setdefault(verdict, [0, 0])
        tally[verdict][0] += 1
        tally[verdict][1] += int(flag)
        print(f"{rows[a]['image']:18s} {rows[a]['label'] + '/' + rows[b]['label']:28s} {v:5.2f} "
              f"{verdict:10s} {xa:7.3f} {xb:7.3f} {'FLAG' if flag else '-'}")
    print("flagged: " + ", ".join(f"{k} {f}/{n}" for k, (n, f) in sorted(tally.items())))


def render_sheet(rows: list[dict], path: Path, gt_by_image: dict[str, list[dict]],
                 cols: int = 3, cell: int = 400) -> None:
    """A contact sheet: each item's box (magenta) in a context crop scaled to the cell, the
    image's other GT boxes thin green, numbered, with the class, pixel size and overlapping
    GT boxes of other classes in the caption."""
    from PIL import Image, ImageDraw

    from grader.images import load_rgb

    tiles = []
    for n, r in enumerate(rows):
        img = load_rgb(r["filepath"])
        H, W = img.shape[:2]
        x, y, w, h = r["box"]
        bx1, by1, bx2, by2 = x * W, y * H, (x + w) * W, (y + h) * H
        # Context: the box's size on each side, at least 60 px, at most the image.
        pad = max(60.0, max(bx2 - bx1, by2 - by1))
        cx1, cy1 = int(max(0, bx1 - pad)), int(max(0, by1 - pad))
        cx2, cy2 = int(min(W, bx2 + pad)), int(min(H, by2 + pad))
        crop = Image.fromarray(img[cy1:cy2, cx1:cx2])
        s = (cell - 36) / max(crop.size)
        crop = crop.resize((max(1, round(crop.size[0] * s)), max(1, round(crop.size[1] * s))),
                           Image.LANCZOS if s < 1 else Image.NEAREST)
        d = ImageDraw.Draw(crop)
        others = []
        for g in gt_by_image.get(r["image"], []):
            gx, gy, gw, gh = g["box"]
            if g["id"] == r["id"] or (abs(gx - x) < 1e-6 and abs(gy - y) < 1e-6 and abs(gw - w) < 1e-6):
                continue
            q = [(gx * W - cx1) * s, (gy * H - cy1) * s, ((gx + gw) * W - cx1) * s, ((gy + gh) * H - cy1) * s]
            d.rectangle(q, outline=(0, 255, 0), width=1)
            v = iou_rel(r["box"], g["box"])
            if v >= 0.3:
                others.append(f"{g['label']} {v:.2f}")
        q = [(bx1 - cx1) * s - 2, (by1 - cy1) * s - 2, (bx2 - cx1) * s + 2, (by2 - cy1) * s + 2]
        d.rectangle(q, outline=(255, 0, 255), width=2)
        tile = Image.new("RGB", (cell, cell), (255, 255, 255))
        tile.paste(crop, (0, 36))
        td = ImageDraw.Draw(tile)
        td.text((4, 2), f"{n}: {r['label']} ({w * W:.0f}x{h * H:.0f}px) {r['image'][-10:-4]}",
                fill=(0, 0, 0))
        if others:
            td.text((4, 18), "overlaps: " + ", ".join(others), fill=(200, 0, 0))
        tiles.append(tile)
    rows_n = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell + cols, max(1, rows_n) * cell + rows_n), (90, 90, 90))
    for n, t in enumerate(tiles):
        sheet.paste(t, ((n % cols) * (cell + 1), (n // cols) * (cell + 1)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


VAL_PAIRS = REPO / "bench" / "data" / "xdup_pairs_coco128val.json"


def val_pair_table() -> None:
    """Held-out report (never tuned on): coco128-val's different-class pairs at IoU >= 0.6 with
    consistency_xdup from the labels alone (the pair's top score does not depend on the class
    evidence, which only lowers the partner) and the verdicts of ``VAL_PAIRS``."""
    from grader.judges.consistency import run_consistency

    ds = load_split("val")
    run_consistency(ds, "ground_truth")
    rows = read_field(ds, "ground_truth", ["consistency_xdup"])
    verdicts = {p["image"]: p for p in json.loads(VAL_PAIRS.read_text())["pairs"]} \
        if VAL_PAIRS.exists() else {}
    by_img: dict[str, list[dict]] = {}
    for r in rows:
        by_img.setdefault(r["image"], []).append(r)
    print(f"\n== coco128-val (held out), different-class GT pairs at IoU >= 0.6, labels only "
          f"(flag: consistency_xdup >= {XDUP_FLAG}) ==")
    tally: dict[str, list[int]] = {}
    for img, rs in sorted(by_img.items()):
        for a in range(len(rs)):
            for b in range(a + 1, len(rs)):
                ra, rb = rs[a], rs[b]
                v = iou_rel(ra["box"], rb["box"])
                if ra["label"] == rb["label"] or v < 0.6:
                    continue
                verdict = verdicts.get(img, {}).get("verdict", "unchecked")
                flag = max(ra["consistency_xdup"], rb["consistency_xdup"]) >= XDUP_FLAG
                t = tally.setdefault(verdict, [0, 0])
                t[0] += 1
                t[1] += int(flag)
                print(f"{img:18s} {ra['label'] + '/' + rb['label']:28s} {v:5.2f} {verdict:10s} "
                      f"{ra['consistency_xdup']:7.3f} {rb['consistency_xdup']:7.3f} "
                      f"{'FLAG' if flag else '-'}")
    print("flagged: " + ", ".join(f"{k} {f}/{n}" for k, (n, f) in sorted(tally.items())))
    ds.delete()


def load_items(path: Path) -> list[dict]:
    src = path if path.exists() else SHARED_VERDICTS
    return json.loads(src.read_text())["items"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", type=Path, default=REPO / "out" / "real_errors" / "db")
    ap.add_argument("--regrade", action="store_true", help="grade() again (ignore the cache)")
    ap.add_argument("--rescore", action="store_true", help="re-run consistency + ensemble only")
    ap.add_argument("--model", default=None,
                    help="with --rescore: the default ensemble JSON to use (default: the shipped one)")
    ap.add_argument("--fuse", choices=["default", "off"], default="default",
                    help="with --rescore: compute_ensemble's fuse_cross_duplicates (off: False)")
    ap.add_argument("--verdicts", type=Path, default=VERDICTS)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--eye-sample", type=int, default=40,
                    help="size of the fixed random sample of GT boxes checked by eye")
    ap.add_argument("--render", action="store_true",
                    help="contact sheets of each top 40's unchecked items in out/real_errors/")
    ap.add_argument("--val-pairs", action="store_true",
                    help="only the held-out coco128-val cross-class pair table (labels only)")
    args = ap.parse_args(argv)
    srv = _start_cached_db(args.cache)
    try:
        if args.val_pairs:
            val_pair_table()
            return 0
        opts = {"default_model": args.model} if args.model else {}
        if args.fuse == "off":
            opts["fuse_cross_duplicates"] = False
        ds = graded_dataset(args.regrade, args.rescore, opts)
        items = load_items(args.verdicts)
        print(f"verdicts: {args.verdicts if args.verdicts.exists() else SHARED_VERDICTS} "
              f"({len(items)} items)")
        gt_attrs = sorted({a for v in GT_RANKINGS.values() for a in v[0]})
        rows = [r for r in read_field(ds, "ground_truth", gt_attrs) if not r["crowd"]]
        derive_columns(ds, rows)
        gm = match(rows, items, "gt")
        err, _, _ = _verdict_arrays(gm)
        area = np.array([r["area_px"] for r in rows])
        order = ranking(rows, ("ensemble_any",), "max", True)
        print(f"tiny boxes (< 32^2 px): {int((area < 1024).sum())} of {len(rows)} labels, "
              f"{int((area[order[:40]] < 1024).sum())} of ensemble_any's top 40, "
              f"{int((area[err] < 1024).sum())} of {int(err.sum())} known errors")
        rng = np.random.default_rng(0)
        unchecked: dict[str, list[dict]] = {}
        report_rankings("GT suspects (non-crowd)", rows, gm, GT_RANKINGS, KS, args.draws, rng,
                        unchecked, eye_sample=args.eye_sample)
        ov_attrs = sorted({a for v in OV_RANKINGS.values() for a in v[0]})
        ov = read_field(ds, "ground_truth_overlooked", ov_attrs)
        om = match(ov, items, "candidate")
        ov_unchecked: dict[str, list[dict]] = {}
        report_rankings("overlooked candidates", ov, om, OV_RANKINGS, (10, 20), args.draws, rng,
                        ov_unchecked)
        pair_table(rows, gm, items)
        seen = set()
        gt_by_image: dict[str, list[dict]] = {}
        for r in rows:
            gt_by_image.setdefault(r["image"], []).append(r)
        print("\n== unchecked items in a top 40 / top 20 (check by eye, add to the verdicts) ==")
        for kind, unc in (("gt", unchecked), ("candidate", ov_unchecked)):
            union: list[dict] = []
            for name, lst in unc.items():
                new = [r for r in lst if r["id"] not in seen]
                seen.update(r["id"] for r in new)
                union += new
                print(f"{kind} {name}: {len(lst)} unchecked, {len(new)} not listed above")
                for r in new:
                    print(f"   {r['image']} {r['label']:14s} {[round(v, 4) for v in r['box']]}")
            if args.render and union:
                # Shuffled across rankings, so the sheets do not say which method proposed what.
                union = [union[i] for i in np.random.default_rng(1).permutation(len(union))]
                for c in range(0, len(union), 9):
                    p = REPO / "out" / "real_errors" / f"unchecked_{kind}_{c // 9:02d}.png"
                    render_sheet(union[c:c + 9], p, gt_by_image)
                    p.with_suffix(".json").write_text(json.dumps(
                        [{k: r[k] for k in ("image", "label", "box")} for r in union[c:c + 9]],
                        indent=1))
                    print(f"   -> {p}")
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
