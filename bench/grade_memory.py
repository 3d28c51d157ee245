"""Peak memory and time per image of grade() as the dataset grows: is memory flat in images?

    .venv/bin/python bench/grade_memory.py --images 256 512 1024

Images: coco128 + coco128-val (256 photos, their labels) and variants of them written once to
a temporary folder so that every file is distinct (no cache or decode is shared between
copies): mirrored (boxes mirrored with them) and re-encoded at another JPEG quality. Each size
runs ``grader.grade()`` with its defaults in a fresh subprocess on a private mongod and prints
wall time, time per image and the subprocess's peak resident memory; the table at the end
gives memory growth against the smallest size (flat = 1.0x). CPU only.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _harness as H

H.one_thread_env()


def _variants(n: int, root: Path) -> list[tuple[str, list[dict]]]:
    """``n`` distinct image files with their detections (label, relative xywh box)."""
    import cv2

    from grader.images import load_rgb

    base = []
    with H.bench_db("lg-mem-src-"):
        for split in ("dev", "val"):
            ds = H.load_split(split, prefix="lg-mem")
            for fp, dets in zip(*ds.values(["filepath", "ground_truth.detections"])):
                base.append((fp, [{"label": d.label, "box": list(d.bounding_box)}
                                  for d in (dets or [])]))
            ds.delete()
    out: list[tuple[str, list[dict]]] = []
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        fp, dets = base[k % len(base)]
        variant = k // len(base)
        img = load_rgb(fp)[:, :, ::-1]          # BGR for cv2.imwrite
        flip = variant % 2 == 1
        if flip:
            img = img[:, ::-1]
            dets = [{"label": d["label"], "box": [1 - d["box"][0] - d["box"][2], *d["box"][1:]]}
                    for d in dets]
        path = root / f"{k:05d}.jpg"
        cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 95 - 5 * (variant // 2)])
        out.append((str(path), dets))
    return out


def _child(spec: Path) -> None:
    import fiftyone as fo

    from grader.pipeline import grade

    items = json.loads(spec.read_text())
    ds = fo.Dataset()
    ds.add_samples([fo.Sample(filepath=fp, ground_truth=fo.Detections(detections=[
        fo.Detection(label=d["label"], bounding_box=d["box"]) for d in dets]))
        for fp, dets in items])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    g = grade(ds)
    wall = time.perf_counter() - t
    print("RESULT " + json.dumps({
        "images": len(ds), "boxes": ds.count("ground_truth.detections"), "seconds": wall,
        "per_image_ms": 1000 * wall / max(len(ds), 1), "rss_before_mb": rss0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ran": sorted(g.reports)}), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        with H.bench_db("lg-mem-", always=True):
            _child(args.child)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="lg-mem-"))
    items = _variants(max(args.images), tmp / "images")
    rows = []
    for n in args.images:
        spec = tmp / f"items_{n}.json"
        spec.write_text(json.dumps(items[:n]))
        p = subprocess.run([sys.executable, __file__, "--child", str(spec)], capture_output=True,
                           text=True)
        got = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
        if not got:
            print(f"{n} images: failed\n{p.stderr[-2000:]}")
            return 1
        r = json.loads(got[-1][7:])
        rows.append(r)
        print(json.dumps(r), flush=True)
    first = rows[0]
    print("\n| images | boxes | grade() s | ms / image | peak RSS MiB | RSS vs smallest |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['boxes']} | {r['seconds']:.1f} | {r['per_image_ms']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / first['peak_rss_mb']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
