"""grade() with every default on odd inputs, as a new user might bring them.

    OMP_NUM_THREADS=1 .venv/bin/python bench/odd_inputs.py

40 raccoon photos re-written as: grayscale JPEG, RGBA PNG, 16-bit PNG (colour, and
12-bit grayscale), a 6x upscale, a 40x30
image, a missing file, a truncated file, boxes out of the image / of zero width / without a
class, samples with no boxes and with no label field, under two class names no model knows
(one with a space, one non-ASCII). Prints the run's summary, each judge's counted skips, and
whether the boxes are unchanged; a traceback means grade() failed on some input.
"""
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

import _harness as H

H.one_thread_env()
import cv2  # noqa: E402
import numpy as np  # noqa: E402

NAMES = ("waschbär", "trash panda 2")   # classes no shipped model knows


def odd_sample(i: int, src, out: Path):
    """Sample ``i`` of the odd set, from raccoon sample ``src`` (kind = i % 10)."""
    import fiftyone as fo

    im = cv2.imread(src.filepath)
    kind, path = i % 10, out / f"{i:03d}.jpg"
    dets = [d.copy() for d in (src.ground_truth.detections if src.ground_truth else [])]
    for j, d in enumerate(dets):
        d.label = NAMES[j % 2]
    if kind == 1:
        cv2.imwrite(str(path), cv2.cvtColor(im, cv2.COLOR_BGR2GRAY))
    elif kind == 2:
        path = path.with_suffix(".png")
        cv2.imwrite(str(path), cv2.cvtColor(im, cv2.COLOR_BGR2BGRA))
    elif kind == 3:
        path = path.with_suffix(".png")
        if (i // 10) % 2:   # a 12-bit grayscale scan in a 16-bit PNG (X-ray, microscopy)
            cv2.imwrite(str(path), cv2.cvtColor(im, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 16)
        else:
            cv2.imwrite(str(path), im.astype(np.uint16) * 257)
    elif kind == 4:
        cv2.imwrite(str(path), cv2.resize(im, None, fx=6, fy=6))
    elif kind == 5:
        cv2.imwrite(str(path), cv2.resize(im, (40, 30)))
    elif kind == 6 and i < 10:
        path = out / "missing.jpg"
    elif kind == 7 and i < 10:
        cv2.imwrite(str(path), im)
        path.write_bytes(path.read_bytes()[:500])   # truncated
    else:
        cv2.imwrite(str(path), im)
        if kind == 8:
            dets += [fo.Detection(label=NAMES[0], bounding_box=[0.9, 0.9, 0.3, 0.3]),
                     fo.Detection(label=NAMES[1], bounding_box=[0.1, 0.1, 0.0, 0.2]),
                     fo.Detection(label=None, bounding_box=[0.2, 0.2, 0.1, 0.1])]
        elif kind == 9:
            dets = []
    gt = None if (kind == 9 and i > 10) else fo.Detections(detections=dets)
    return fo.Sample(filepath=str(path), ground_truth=gt)


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="lg-odd-inputs-"))
    ok = False
    with H.bench_db():
        import fiftyone as fo

        import grader

        src = H.load("raccoon", "odd-inputs-src")
        ds = fo.Dataset("odd-inputs", overwrite=True)
        ds.add_samples([odd_sample(i, s, out) for i, s in enumerate(src.head(40))])
        before = ds.values("ground_truth.detections.bounding_box", unwind=True)
        try:
            rep = grader.grade(ds)
            print(rep.summary())
            for k, r in rep.reports.items():
                print(f"{k:12s} skipped {dict(r.skipped)}")
            print("not run", rep.not_run)
            ok = True
        except Exception:
            traceback.print_exc()
        same = before == ds.values("ground_truth.detections.bounding_box", unwind=True)
        print("boxes unchanged:", same)
        ds.delete()
        src.delete()
    shutil.rmtree(out, ignore_errors=True)
    return 0 if ok and same else 1


if __name__ == "__main__":
    sys.exit(main())
