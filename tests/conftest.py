"""Test session setup: a private FiftyOne database, the plugin on FIFTYONE_PLUGINS_DIR, data fixtures.

The environment must be set before ``fiftyone`` is first imported, hence at module import time.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="label-grader-tests-"))
# atexit runs last-registered first: the mongod below stops, then its files (~300 MB) go.
atexit.register(shutil.rmtree, _TMP, True)

# Our own mongod on a free 127.0.0.1 port, started and stopped by the suite: with only
# FIFTYONE_DATABASE_DIR set, FiftyOne would attach to any running "--51-service db --multi".
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mongod_helper import start_session_mongod  # noqa: E402

_MONGOD = start_session_mongod(_TMP)
if _MONGOD is not None:
    atexit.register(_MONGOD.stop)
os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(_TMP / "db"))
os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")
# The plugin is discovered exactly as a user installs it: a directory under the plugins dir.
_plugins = _TMP / "plugins"
_plugins.mkdir()
(_plugins / "label-grader").symlink_to(REPO, target_is_directory=True)
os.environ["FIFTYONE_PLUGINS_DIR"] = str(_plugins)
# Never reach a model hub from tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import fiftyone as fo  # noqa: E402

SHARED_DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path | None:
    """Path under the shared evaluation data, or None when that data is absent."""
    p = SHARED_DATA.joinpath(*parts)
    return p if p.exists() else None


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def coco128_base():
    """The real coco128 dataset (128 COCO images, 939 boxes) loaded once per session."""
    from grader import io

    root = shared_path("coco128")
    if root is None:
        pytest.skip("../shared/data/coco128 is not present")
    return io.load_coco(str(root / "images"), str(root / "labels.json"),
                        name="lg-test-coco128", overwrite=True)


@pytest.fixture()
def coco128(coco128_base):
    """A private clone of coco128 for one test (tests may write fields freely)."""
    ds = coco128_base.clone()
    yield ds
    ds.delete()


def raccoon_subset(n: int, name: str):
    """The first ``n`` raccoon photos (a class no shipped model knows; sorted sample ids) as
    a dataset ``name`` with their VOC boxes in ``ground_truth``; skips without the data."""
    root = shared_path("raccoon")
    if root is None:
        pytest.skip("../shared/data/raccoon is not present")
    full = fo.Dataset.from_dir(dataset_type=fo.types.VOCDetectionDataset,
                               data_path=str(root / "images"),
                               labels_path=str(root / "annotations"),
                               label_field="ground_truth", name=f"{name}-all", overwrite=True)
    ds = full.select(sorted(full.values("id"))[:n]).clone(name)
    full.delete()
    return ds


def write_random_images(folder: Path, n: int, size=(96, 128), seed: int = 0) -> list[str]:
    """Write ``n`` random JPEG images (H, W = size) and return their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, size=(size[0], size[1], 3), dtype=np.uint8)
        p = folder / f"img_{i:04d}.jpg"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture()
def synthetic_dataset(tmp_path):
    """A small dataset on images the test writes: 6 samples, 2 classes, GT + predictions."""
    paths = write_random_images(tmp_path / "imgs", 6)
    rng = np.random.default_rng(1)
    ds = fo.Dataset()
    samples = []
    for p in paths:
        gt, pr = [], []
        for _ in range(3):
            x, y = rng.uniform(0.05, 0.5, size=2)
            w, h = rng.uniform(0.15, 0.4, size=2)
            label = str(rng.choice(["cat", "dog"]))
            gt.append(fo.Detection(label=label, bounding_box=[x, y, w, h]))
            pr.append(fo.Detection(label=label, bounding_box=[x + 0.01, y, w, h],
                                   confidence=float(rng.uniform(0.6, 0.99))))
        samples.append(fo.Sample(filepath=p, ground_truth=fo.Detections(detections=gt),
                                 predictions=fo.Detections(detections=pr)))
    ds.add_samples(samples)
    ds.default_classes = ["cat", "dog"]
    ds.save()
    ds.compute_metadata()
    yield ds
    ds.delete()
