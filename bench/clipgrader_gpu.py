"""ClipGrader crops/s on a GPU box without FiftyOne: decode + render + model vs bare forward.

The lent GPU machines carry torch but not FiftyOne/MongoDB, so this bench reads coco128's
COCO JSON directly and runs grader's own renderer and model; the database writes it leaves
out are measured on CPU by ``bench/clipgrader_throughput.py`` (0.03-0.07 s per 939 boxes).

    python bench/clipgrader_gpu.py --data PATH/coco128 --device cuda --model ViT-L-14-336 --precision bf16
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import multiprocessing as mp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grader.judges.clipgrader.model import load_grader  # noqa: E402
from grader.images import load_rgb  # noqa: E402
from grader.judges.clipgrader.scoring import score_crops  # noqa: E402
from grader.render import BoxCrop, crop_with_box  # noqa: E402


def load_boxes(root: Path, repeat: int):
    coco = json.loads((root / "labels.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    per_image = defaultdict(list)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if w > 1 and h > 1:
            per_image[a["image_id"]].append(([x, y, x + w, y + h], names[a["category_id"]]))
    jobs = [(str(root / "images" / files[i]), boxes) for i, boxes in per_image.items()]
    return jobs * repeat, sorted(set(names.values()))


def render_job(job, size: int, index: dict) -> list:
    """Decode one image once and render every box (top level: picklable for process pools)."""
    path, boxes = job
    img = load_rgb(path)
    return [(np.asarray(crop_with_box(img, b, out_size=size)), index[l]) for b, l in boxes]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=min(8, (os.cpu_count() or 2) - 1))
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--pool", choices=["threads", "processes"], default="threads",
                    help="decode/render in threads (GIL-bound) or in spawned processes")
    a = ap.parse_args()

    jobs, classes = load_boxes(Path(a.data), a.repeat)
    index = {c: i for i, c in enumerate(classes)}
    g = load_grader(a.model, None, device=a.device, precision=a.precision)
    size = g.image_size
    cuda = g.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    render = partial(render_job, size=size, index=index)
    if a.pool == "processes":
        pool = ProcessPoolExecutor(a.workers, mp_context=mp.get_context("spawn"))
        list(pool.map(render, jobs[: a.workers * 2]))  # start the workers outside the timing
    else:
        pool = ThreadPoolExecutor(a.workers)

    # Pre-rendered batch for the bare forward.
    crops = [c for job in jobs for c in render(job)]
    n = len(crops)
    data = g.to_uint8_batch([c for c, _ in crops])
    k = [i for _, i in crops]
    g.probabilities(data[: a.batch_size], k[: a.batch_size], classes)  # warm-up
    sync()

    def bare() -> float:
        sync(); t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, a.batch_size):
                g.probabilities(data[i:i + a.batch_size], k[i:i + a.batch_size], classes)
        sync()
        return time.perf_counter() - t

    def e2e() -> float:
        # Threads decode + render ahead (bounded), grader's own score_crops consumes them.
        q: queue.Queue = queue.Queue(maxsize=4 * a.workers)
        done = object()

        def produce():
            for j, out in enumerate(pool.map(render, jobs, chunksize=2 if a.pool == "processes" else 1)):
                q.put([BoxCrop(str(j), f"{j}-{m}", classes[i], c, None) for m, (c, i) in enumerate(out)])
            q.put(done)

        def stream():
            while (item := q.get()) is not done:
                yield from item

        sync(); t = time.perf_counter()
        threading.Thread(target=produce, daemon=True).start()
        scores = score_crops(g, stream(), classes, batch_size=a.batch_size)
        sync()
        assert len(scores) == n
        return time.perf_counter() - t

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    bares, e2es = [], []
    for _ in range(3):
        bares.append(bare())
        e2es.append(e2e())
    tb, te = min(bares), min(e2es)
    dev = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"model={a.model} (random weights) device={dev} precision={a.precision} input={size}px "
          f"batch={a.batch_size} workers={a.workers} {a.pool} crops={n}")
    print(f"bare model forward (pre-rendered): {n / tb:10.1f} crops/s ({tb:.2f} s)")
    print(f"decode+render+model, pipelined    : {n / te:10.1f} crops/s ({te:.2f} s)")
    print(f"ratio end-to-end / bare           : {te / tb:.2f}x  (target <= 1.3x; DB writes not included)")
    if cuda:
        print(f"peak GPU memory                   : {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"peak RSS                          : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
