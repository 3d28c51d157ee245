"""Load detection datasets into FiftyOne: COCO (instances JSON), YOLO (txt + names), Penn-Fudan.

COCO and YOLO use FiftyOne's own importers; Penn-Fudan's PASCAL-1.0 text format has no
importer, so it is parsed here.
"""
from __future__ import annotations

import glob
import os
import re

import fiftyone as fo
import yaml

from .boxes import abs_xyxy_to_rel_xywh


def _new_dataset(name: str | None, overwrite: bool) -> fo.Dataset:
    if name and fo.dataset_exists(name):
        if not overwrite:
            raise ValueError(f"Dataset '{name}' already exists; pass overwrite=True to replace it")
        fo.delete_dataset(name)
    return fo.Dataset(name)


def load_coco(images_dir: str, labels_path: str, name: str | None = None,
              label_field: str = "ground_truth", overwrite: bool = False,
              include_crowd: bool = True) -> fo.Dataset:
    """Load a COCO instances JSON + image dir; classes are stored as ``dataset.default_classes``.

    Crowd annotations keep their ``iscrowd`` attribute so judges can exclude them.
    """
    ds = _new_dataset(name, overwrite)
    ds.add_dir(
        dataset_type=fo.types.COCODetectionDataset,
        data_path=images_dir,
        labels_path=labels_path,
        label_types="detections",
        label_field=label_field,
    )
    if not include_crowd:
        from fiftyone import ViewField as F
        view = ds.filter_labels(label_field, F("iscrowd") != 1, only_matches=False)
        view.save(label_field)
    if ds.default_classes == [] and ds.info.get("categories"):
        ds.default_classes = [c["name"] for c in ds.info["categories"]]
    ds.compute_metadata()
    ds.save()
    return ds


def read_yolo_names(path: str) -> list[str]:
    """Class names from a YOLO ``data.yaml`` (``names:`` list or dict) or a one-per-line file."""
    if path.endswith((".yaml", ".yml")):
        with open(path) as f:
            names = yaml.safe_load(f)["names"]
        if isinstance(names, dict):
            return [names[k] for k in sorted(names)]
        return list(names)
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip()]


def load_yolo(images_dir: str, labels_dir: str, classes: list[str] | str,
              name: str | None = None, label_field: str = "ground_truth",
              overwrite: bool = False) -> fo.Dataset:
    """Load YOLO txt labels (``class cx cy w h`` relative) beside an image dir."""
    if isinstance(classes, str):
        classes = read_yolo_names(classes)
    ds = _new_dataset(name, overwrite)
    ds.add_dir(
        dataset_type=fo.types.YOLOv4Dataset,
        data_path=images_dir,
        labels_path=labels_dir,
        classes=classes,
        label_field=label_field,
    )
    ds.default_classes = list(classes)
    ds.compute_metadata()
    ds.save()
    return ds


_PF_SIZE = re.compile(r"Image size \(X x Y x C\) : (\d+) x (\d+)")
_PF_BOX = re.compile(
    r'Bounding box for object \d+ "([^"]+)" \(Xmin, Ymin\) - \(Xmax, Ymax\) : '
    r"\((\d+), (\d+)\) - \((\d+), (\d+)\)"
)


def load_pennfudan(root: str, name: str | None = None, label_field: str = "ground_truth",
                   overwrite: bool = False) -> fo.Dataset:
    """Load Penn-Fudan (``PNGImages/`` + PASCAL-1.0 text ``Annotation/``); every box is ``person``."""
    ds = _new_dataset(name, overwrite)
    samples = []
    for ann in sorted(glob.glob(os.path.join(root, "Annotation", "*.txt"))):
        text = open(ann, encoding="latin-1").read()
        w, h = map(int, _PF_SIZE.search(text).groups())
        stem = os.path.splitext(os.path.basename(ann))[0]
        dets = []
        for _, x1, y1, x2, y2 in _PF_BOX.findall(text):
            # PASCAL-1.0 pixel coordinates are 1-based and inclusive.
            box = abs_xyxy_to_rel_xywh([[int(x1) - 1, int(y1) - 1, int(x2), int(y2)]], w, h)[0]
            dets.append(fo.Detection(label="person", bounding_box=box.tolist()))
        samples.append(fo.Sample(
            filepath=os.path.join(root, "PNGImages", stem + ".png"),
            **{label_field: fo.Detections(detections=dets)},
        ))
    ds.add_samples(samples)
    ds.default_classes = ["person"]
    ds.compute_metadata()
    ds.save()
    return ds
