"""ClipGrader throughput: end-to-end grading vs the bare model forward, measured in one run.

end-to-end = ``grade_clipgrader`` over coco128 (decode each image once, render every box,
model in batches, bulk writes of fields and tags, run record);
bare       = the same model scoring the same crops, pre-rendered and already in memory.
Prints crops/s of both, the ratio (target: end-to-end time <= 1.3 x bare), and peak memory.

    .venv/bin/python bench/clipgrader_throughput.py                       # tiny config, CPU
    .venv/bin/python bench/clipgrader_throughput.py --model ViT-B-32      # realistic size, random weights
    .venv/bin/python bench/clipgrader_throughput.py --device cuda --model ViT-L-14-336
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

# A throwaway database: the bench never touches the user's datasets.
os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="lg-bench-db-"))
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grader import io  # noqa: E402
from grader.judges.clipgrader import grade_clipgrader, load_grader  # noqa: E402
from grader.judges.clipgrader.model import TINY_MODEL  # noqa: E402
from grader.render import default_workers, iter_box_crops  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=TINY_MODEL)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                    help="bf16/fp16: image tower under autocast (for GPUs)")
    ap.add_argument("--pretrained", default="none", help="'none' = random weights (no download)")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "coco128"))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=None,
                    help="decode/render threads (default: cores - 1, at most 8)")
    ap.add_argument("--repeat", type=int, default=1, help="copies of the dataset (more crops)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N images (big models on CPU)")
    ap.add_argument("--trials", type=int, default=3,
                    help="bare and end-to-end runs alternate this many times; the fastest of each is kept")
    args = ap.parse_args()

    root = Path(args.data)
    ds = io.load_coco(str(root / "images"), str(root / "labels.json"), name="lg-bench-clipgrader",
                      overwrite=True)
    if args.repeat > 1:
        base = ds.clone()
        for _ in range(args.repeat - 1):
            ds.add_collection(base, new_ids=True)
    if args.limit:
        ds.exclude(ds.skip(args.limit).values("id")).keep()
    ds.compute_metadata()
    n_boxes = ds.count("ground_truth.detections")
    if args.workers is None:
        args.workers = default_workers()
    pretrained = None if args.pretrained.lower() == "none" else args.pretrained
    g = load_grader(args.model, pretrained, device=args.device, precision=args.precision)
    classes = sorted(ds.distinct("ground_truth.detections.label"))
    index = {c: i for i, c in enumerate(classes)}
    print(f"model={args.model} pretrained={pretrained} device={args.device} "
          f"precision={args.precision} "
          f"input={g.image_size}px batch={args.batch_size} workers={args.workers} "
          f"torch_threads={torch.get_num_threads()} images={len(ds)} boxes={n_boxes}")

    def sync():
        if g.device.type == "cuda":
            torch.cuda.synchronize()

    # Warm-up (allocator, kernels, text features) on one full batch.
    warm = next(iter(iter_box_crops(ds.limit(2), "ground_truth", out_size=g.image_size)))
    g.probabilities(g.to_uint8_batch([warm.image] * args.batch_size), [0] * args.batch_size,
                    classes)
    sync()

    # Pre-render every crop once, outside any timing.
    t = time.perf_counter()
    crops = list(iter_box_crops(ds, "ground_truth", out_size=g.image_size))
    render_s = time.perf_counter() - t
    data = g.to_uint8_batch([c.image for c in crops])
    k = [index[c.label] for c in crops]
    n = len(crops)

    cpu = {}

    def bare() -> float:
        # uint8 -> device, normalise, encode, softmax: the model's share of grading.
        sync()
        c = time.process_time()
        t = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, args.batch_size):
                g.probabilities(data[i:i + args.batch_size], k[i:i + args.batch_size], classes)
        sync()
        cpu.setdefault("bare", []).append(time.process_time() - c)
        return time.perf_counter() - t

    def e2e(workers: int) -> tuple[float, dict]:
        # decode + render + model + writes, as a user runs it.
        sync()
        c = time.process_time()
        t = time.perf_counter()
        rep = grade_clipgrader(ds, "ground_truth", grader=g, batch_size=args.batch_size,
                               num_workers=workers, classes=classes)
        sync()
        assert rep.labels_scored == n, (rep.labels_scored, n)
        cpu.setdefault(workers, []).append(time.process_time() - c)
        return time.perf_counter() - t, rep.info["seconds"]

    if g.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    # Alternating trials, so drifting load from other processes hits both sides alike.
    bare_runs, e2e_runs, parts = [], [], []
    for _ in range(max(args.trials, 1)):
        bare_runs.append(bare())
        dt, sec = e2e(args.workers)
        e2e_runs.append(dt)
        parts.append(sec)
    bare_s = min(bare_runs)
    results = {args.workers: min(e2e_runs)}
    if args.workers:
        results[0] = e2e(0)[0]
    write_s = min(p["write"] for p in parts)
    print("trials (s): bare " + " ".join(f"{x:.2f}" for x in bare_runs)
          + " | end-to-end " + " ".join(f"{x:.2f}" for x in e2e_runs))
    del data, crops

    e2e_s = results[args.workers]
    print(f"serial decode+render only   : {n / render_s:9.1f} crops/s  ({render_s:.2f} s)")
    print(f"bare model forward          : {n / bare_s:9.1f} crops/s  ({bare_s:.2f} s)")
    print(f"end-to-end, {args.workers} render threads: {n / e2e_s:9.1f} crops/s  ({e2e_s:.2f} s)")
    if 0 in results and args.workers:
        print(f"end-to-end, serial (0)      : {n / results[0]:9.1f} crops/s  ({results[0]:.2f} s)")
    print(f"  of which bulk writes+tags : {write_s:9.2f} s")
    print(f"ratio end-to-end / bare     : {e2e_s / bare_s:9.2f}x  (target <= 1.3x)")
    # CPU seconds (all threads) are steadier than wall time on a shared machine; they count
    # work, not overlap, so this ratio is the extra work of decode/render/writes.
    cpu_ratio = min(cpu[args.workers]) / min(cpu["bare"])
    print(f"CPU-time ratio e2e / bare   : {cpu_ratio:9.2f}x  (process CPU seconds, all threads)")
    print(f"peak RSS                    : {peak_rss_mib():9.0f} MiB")
    if g.device.type == "cuda":
        print(f"peak CUDA allocated         : {torch.cuda.max_memory_allocated() / 2**20:9.0f} MiB")
    ds.delete()


if __name__ == "__main__":
    main()
