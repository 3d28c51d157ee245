"""YOLOX-Nano in PyTorch: fine-tuning and inference throughput, CPU or GPU, without FiftyOne.

    .venv/bin/python bench/finetune_speed.py                    # here (CPU)
    python3 bench/finetune_speed.py --device cuda --copies 20   # a GPU machine (torch + onnx2torch)

Reads raccoon's VOC labels directly (no database), letterboxes each image once
(``grader.detectors.finetune.TrainingImages``) and prints, in one run:

- fine-tuning: seconds per image-epoch and for one fold model of grade()'s recipe
  (``FinetuneSettings``: half the images, ``--epochs``);
- inference: images/s of the bare network on pre-letterboxed batches and of
  ``TorchYolox.predict`` from decoded arrays (letterbox + decode included), beside onnxruntime
  and cv2.dnn on the same images, and the GPU's busy share while the network runs (NVML);
- the extrapolated time of one detector pass over 1M boxes at raccoon's / COCO's boxes per image.

``--copies`` repeats the images (a larger dataset for throughput; training uses the originals).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))
DET = Path(os.environ.get("LABEL_GRADER_DETECTORS", DATA / "detectors")) / "yolox-nano"


def voc_images(root: Path, size: int, limit: int | None = None):
    """Decoded RGB images and a TrainingImages of raccoon's VOC labels (one class)."""
    from grader.detectors.base import letterbox
    from grader.detectors.finetune import TrainingImages
    from grader.images import load_rgb

    rgbs, ids, blobs, boxes, classes = [], [], [], [], []
    for xml in sorted(glob.glob(str(root / "annotations" / "*.xml")))[:limit]:
        t = ET.parse(xml).getroot()
        rgb = load_rgb(str(root / "images" / t.findtext("filename")))
        blob, meta = letterbox([rgb], size, bgr=True, dtype=np.uint8)
        b = np.array([[float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
                      for o in t.findall("object")], dtype=np.float32).reshape(-1, 4) * meta[0][0]
        rgbs.append(rgb)
        ids.append(xml)
        blobs.append(blob[0])
        boxes.append(b)
        classes.append(np.zeros(len(b), dtype=np.int64))
    return rgbs, TrainingImages(ids, np.stack(blobs), boxes, classes)


class GpuBusy:
    """Samples NVML's GPU utilisation every 20 ms while active (None without NVML / a GPU)."""

    def __init__(self):
        self.samples: list[int] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._h = pynvml.nvmlDeviceGetHandleByIndex(0)
            self._nvml = pynvml
        except Exception:
            self._nvml = None

    def __enter__(self):
        if self._nvml:
            self._t = threading.Thread(target=self._run, daemon=True)
            self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._h).gpu)
            time.sleep(0.02)

    def __exit__(self, *a):
        self._stop.set()

    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cuda / cpu (default: cuda when present)")
    ap.add_argument("--epochs", type=int, default=None, help="default: FinetuneSettings.epochs")
    ap.add_argument("--train-epochs", type=int, default=None,
                    help="epochs actually run for the timing (default: all)")
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=None, help="first N raccoon images")
    ap.add_argument("--skip-baselines", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from grader.detectors.finetune import FinetuneSettings, TrainingImages, train_fold
    from grader.detectors.torch_yolox import TorchYolox, default_device

    device = args.device or default_device()
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    st = FinetuneSettings(device=device)
    epochs = args.epochs or st.epochs
    rgbs, data = voc_images(DATA / "raccoon", st.input_size, args.images)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU x{os.cpu_count()}"
    print(f"device {name}; torch {torch.__version__}; raccoon {len(rgbs)} images "
          f"({sum(len(b) for b in data.boxes)} boxes)")

    # -- fine-tuning: one fold model of grade()'s recipe (half the images)
    half = len(data.ids) // 2
    fold = TrainingImages(data.ids[:half], data.blobs[:half], data.boxes[:half], data.classes[:half])
    run_epochs = args.train_epochs or epochs
    st.epochs = run_epochs
    t0 = time.time()
    with GpuBusy() as busy_train:
        train_fold(fold, 1, st, str(DET))
    _sync(device)
    train_s = time.time() - t0
    per_img_epoch = train_s / (half * run_epochs)
    fold_s = per_img_epoch * half * epochs
    print(f"fine-tune: {per_img_epoch * 1000:.1f} ms per image-epoch ({run_epochs} epochs x {half} "
          f"images in {train_s:.1f} s); one fold model at {epochs} epochs: {fold_s:.0f} s; "
          f"grade()'s {st.folds} folds on {len(data.ids)} images: {fold_s * st.folds:.0f} s"
          + (f"; GPU busy {busy_train.mean():.0f} %" if busy_train.mean() is not None else ""))

    # -- inference throughput
    det = TorchYolox(str(DET), ["raccoon"], device=device, batch_size=args.batch)
    blobs = np.concatenate([data.blobs] * args.copies).astype(np.float32)
    imgs = rgbs * args.copies
    with torch.inference_mode():
        x = torch.from_numpy(blobs[:args.batch]).to(device)
        det.module(x)  # warm-up (cuDNN plans)
        _sync(device)
        t0 = time.time()
        with GpuBusy() as busy:
            for s in range(0, len(blobs), args.batch):
                det.module(torch.from_numpy(blobs[s:s + args.batch]).to(device))
            _sync(device)
        bare = len(blobs) / (time.time() - t0)
    t0 = time.time()
    with GpuBusy() as busy_e2e:
        det.predict(imgs)
    e2e = len(imgs) / (time.time() - t0)
    busy_txt = (f"; GPU busy {busy.mean():.0f} % (bare), {busy_e2e.mean():.0f} % (end to end)"
                if busy.mean() is not None else "")
    print(f"inference torch/{device} batch {args.batch}: bare {bare:.1f} images/s; "
          f"predict() with letterbox + decode {e2e:.1f} images/s{busy_txt}")
    if not args.skip_baselines:
        from grader.detectors.cvdnn import YoloXNano
        from grader.detectors.ort import OrtYolox

        n = min(len(rgbs), 64)
        ort = OrtYolox(str(DET / "model.onnx"), threads=os.cpu_count())
        t0 = time.time()
        ort.run_batched(data.blobs[:n].astype(np.float32), batch=8)
        print(f"inference onnxruntime CPU x{os.cpu_count()}: {n / (time.time() - t0):.1f} images/s (bare)")
        cv = YoloXNano(str(DET))
        t0 = time.time()
        cv.predict(rgbs[:n])
        print(f"inference cv2.dnn: {n / (time.time() - t0):.1f} images/s (letterbox + decode)")
    for per in (sum(len(b) for b in data.boxes) / len(data.ids), 7.3):
        print(f"1M boxes at {per:.1f} boxes/image = {1e6 / per:.0f} images: one detector pass "
              f"{1e6 / per / e2e / 60:.1f} min at the end-to-end rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
