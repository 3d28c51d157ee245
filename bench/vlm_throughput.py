"""VLM judge throughput: HTTP backend vs concurrency, and local per-item latency.

HTTP: the judge grades every box of the first ``--images`` coco128 images against the test's
OpenAI-compatible server on 127.0.0.1, whose replies take ``--delay`` seconds (a stand-in for
model latency), at concurrency 1, 4 and 16. It also times rendering alone (decode + crop,
no model) so the output shows how much of rendering is hidden behind waiting: with perfect
overlap, wall time ~= max(render, n * delay / concurrency).

Local: per-item latency of the tiny random-weight LLaVA built by the tests (``--device cuda``
on a GPU machine), at batch size 1 and 8. The tiny model measures the pipeline's overhead
(chat template, processor, generate loop), not a real VLM's speed.

    python bench/vlm_throughput.py [--images 24 --delay 0.05 --device cpu]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="lg-bench-db-"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the fake server and tiny-model builder live there

from grader.judges.vlm import make_backend  # noqa: E402
from grader.judges.vlm.backends import VLMRequest  # noqa: E402
from tiny_vlm import build_tiny_vlm, steer  # noqa: E402

DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))


def load_view(n_images: int):
    from grader import io
    root = DATA / "coco128"
    if not root.exists():
        raise SystemExit(f"coco128 not found under {DATA}; set LABEL_GRADER_DATA")
    ds = io.load_coco(str(root / "images"), str(root / "labels.json"), name="lg-bench-vlm",
                      overwrite=True)
    return ds, ds.limit(n_images)


def bench_http(view, delay: float, concurrencies: list[int], out_size: int) -> None:
    # FiftyOne is imported only here so the local bench also runs where it is not installed.
    from fake_openai_server import FakeOpenAIServer
    from grader.render import iter_box_crops
    from grader.judges.vlm import run_vlm_judge

    n = view.count("ground_truth.detections")
    t0 = time.perf_counter()
    rendered = sum(1 for _ in iter_box_crops(view, "ground_truth", out_size=out_size))
    t_render = time.perf_counter() - t0
    print(f"HTTP backend: {n} boxes on {len(view)} images, server delay {delay * 1000:.0f} ms/request")
    print(f"  render only (decode + crop, no model): {t_render:.2f} s "
          f"({rendered / t_render:.1f} crops/s)")
    # The pipeline floor: the same run with an instant server (render + parse + bulk writes).
    with FakeOpenAIServer(delay=0.0) as srv:
        backend = make_backend("openai", "bench-vlm", base_url=srv.base_url,
                               concurrency=max(concurrencies))
        run_vlm_judge(view, backend, cache=False, out_size=out_size, run_key=None)  # warm-up
        t0 = time.perf_counter()
        run_vlm_judge(view, backend, cache=False, out_size=out_size, run_key=None)
        t_floor = time.perf_counter() - t0
    print(f"  pipeline floor (instant server: render + parse + writes): {t_floor:.2f} s")
    rates = {}
    with FakeOpenAIServer(delay=delay) as srv:
        for c in concurrencies:
            backend = make_backend("openai", "bench-vlm", base_url=srv.base_url, concurrency=c)
            srv.state.max_in_flight = 0
            t0 = time.perf_counter()
            rep = run_vlm_judge(view, backend, cache=False, out_size=out_size, run_key=None)
            dt = time.perf_counter() - t0
            rates[c] = rep.labels_scored / dt
            wait = n * delay / c
            # Without overlap the run would take floor + wait; what is below that was hidden.
            hidden = max(t_floor + wait - dt, 0.0)
            print(f"  concurrency {c:>2}: {dt:6.2f} s, {rates[c]:7.1f} judgements/s, "
                  f"max in flight {srv.state.max_in_flight:>2}; server wait {wait:.2f} s, "
                  f"floor + wait {t_floor + wait:.2f} s, overlapped {hidden:.2f} s "
                  f"(render alone {t_render:.2f} s)")
    base = concurrencies[0]
    for c in concurrencies[1:]:
        print(f"  speed-up concurrency {c} vs {base}: {rates[c] / rates[base]:.2f}x")


def bench_local(device: str, n_items: int, batch_sizes: list[int]) -> None:
    import numpy as np
    from PIL import Image

    model_dir = build_tiny_vlm(Path(tempfile.mkdtemp(prefix="lg-tiny-vlm-")) / "model")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (384, 384, 3), dtype=np.uint8))
              for _ in range(n_items)]
    print(f"Local transformers backend (tiny random-weight LLaVA, device {device}), "
          f"{n_items} items, max_new_tokens 16")
    lat = {}
    for bs in batch_sizes:
        backend = make_backend("transformers", str(model_dir), device=device, batch_size=bs,
                               max_new_tokens=16)
        reqs = [(i, VLMRequest(im, 'Is the label "cat" correct? Answer yes or no.'))
                for i, im in enumerate(images[:bs])]
        list(backend.stream(reqs))  # warm-up
        t0 = time.perf_counter()
        out = list(backend.stream((i, VLMRequest(im, 'Is the label "cat" correct? Answer yes or no.'))
                                  for i, im in enumerate(images)))
        dt = time.perf_counter() - t0
        assert len(out) == n_items
        lat[bs] = dt / n_items
        print(f"  batch {bs:>2}: {lat[bs] * 1000:7.1f} ms/item ({1 / lat[bs]:.1f} items/s)")
    if len(batch_sizes) > 1:
        print(f"  batch {batch_sizes[-1]} vs {batch_sizes[0]}: "
              f"{lat[batch_sizes[0]] / lat[batch_sizes[-1]]:.2f}x items/s")
    # Correctness on this device: a steered model must answer "no" with P(yes) = 0.3 everywhere.
    steer(backend.net, backend.tokenizer, "no", p_yes=0.3)
    out = list(backend.stream((i, VLMRequest(im, "is this a cat ?")) for i, im in enumerate(images)))
    ok = all(r.text.split()[0] == "no" and abs(r.yes_prob - 0.3) < 1e-3 for _, r in out)
    print(f"  steered check on {device} (batch {backend.batch_size}, {len(out)} items): "
          f"{'ok' if ok else 'FAILED'}")
    if not ok:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--delay", type=float, default=0.05)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--out-size", type=int, default=384)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--local-items", type=int, default=32)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch.set_num_threads for the local bench (0: torch's default); on a "
                         "loaded shared CPU, 1 avoids OpenMP threads fighting for cores")
    ap.add_argument("--skip-http", action="store_true")
    ap.add_argument("--skip-local", action="store_true")
    args = ap.parse_args()
    if not args.skip_http:
        ds, view = load_view(args.images)
        try:
            bench_http(view, args.delay, [int(c) for c in args.concurrency.split(",")],
                       args.out_size)
        finally:
            ds.delete()
    if not args.skip_local:
        if args.torch_threads:
            import torch

            torch.set_num_threads(args.torch_threads)
        bench_local(args.device, args.local_items, [int(b) for b in args.batch_sizes.split(",")])


if __name__ == "__main__":
    main()
