"""cv2.dnn against onnxruntime for the shipped YOLOX-Nano, on the same decoded images.

    .venv/bin/python bench/detector_runtime.py                    # coco128-val, 416 / 640 / crops
    .venv/bin/python bench/detector_runtime.py --threads 1 2      # onnxruntime intra-op threads

For each input size grade() uses (416: the detector step; 640: the overlooked finder; 256: the
zoom judge's crops, 32 per batch) it prints the wall and CPU seconds per image of each runtime
over the same letterboxed images (decoding excluded), the ratio, and the largest difference of
their decoded rows (boxes in pixels, scores) so the choice cannot change what a judge sees.
"""
from __future__ import annotations

import argparse
import os
import time

import _harness as H

H.one_thread_env()

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def _images(split: str, n: int) -> list[np.ndarray]:
    from grader.images import load_rgb

    d = H.DATA / ("coco128-val" if split == "val" else "coco128") / "images"
    paths = sorted(p for p in d.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    return [load_rgb(str(p)) for p in paths]


def _crops(images: list[np.ndarray], n: int, seed: int = 0) -> list[np.ndarray]:
    """Square crops of random windows, as the zoom judge cuts around boxes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        im = images[int(rng.integers(len(images)))]
        h, w = im.shape[:2]
        s = int(rng.integers(32, max(33, min(h, w))))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        out.append(im[y:y + s, x:x + s])
    return out


def _time(det, images, batch: int) -> tuple[float, float, list[np.ndarray]]:
    t, c = time.perf_counter(), time.process_time()
    rows = []
    for s in range(0, len(images), batch):
        rows += det.predict(images[s:s + batch])
    return time.perf_counter() - t, time.process_time() - c, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val", choices=["dev", "val"])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--crops", type=int, default=512)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    args = ap.parse_args()
    from grader.detectors.cvdnn import YoloXNano

    model_dir = str(H.DATA / "detectors" / "yolox-nano")
    images = _images(args.split, args.images)
    crops = _crops(images, args.crops)
    print(f"{len(images)} images ({args.split}), {len(crops)} crops; cv2 threads "
          f"{cv2.getNumThreads()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'input':>10} {'runtime':>16} {'wall ms/img':>12} {'CPU ms/img':>11} "
          f"{'x cv2 wall':>10} {'max |d box| px':>15} {'max |d score|':>14}")
    for size, ims, batch in ((416, images, 8), (640, images, 8), (256, crops, 32)):
        cv = YoloXNano(model_dir, input_size=size, backend="cv2")
        wall0, cpu0, ref = _time(cv, ims, batch)
        print(f"{size:>10} {'cv2.dnn':>16} {1e3 * wall0 / len(ims):>12.1f} "
              f"{1e3 * cpu0 / len(ims):>11.1f} {1.0:>10.2f} {'-':>15} {'-':>14}")
        for th in args.threads:
            os.environ["LABEL_GRADER_ORT_THREADS"] = str(th)
            ox = YoloXNano(model_dir, input_size=size, backend="onnxruntime")
            wall, cpu, rows = _time(ox, ims, batch)
            d_box = max(float(np.abs(a[:, :4] - b[:, :4]).max()) for a, b in zip(ref, rows))
            d_sc = max(float(np.abs(a[:, 4:] - b[:, 4:]).max()) for a, b in zip(ref, rows))
            print(f"{size:>10} {f'onnxruntime x{th}':>16} {1e3 * wall / len(ims):>12.1f} "
                  f"{1e3 * cpu / len(ims):>11.1f} {wall / wall0:>10.2f} {d_box:>15.4f} {d_sc:>14.2e}")


if __name__ == "__main__":
    main()
