"""What the benches share, so that each keeps only what it measures.

    import _harness as H          # first: puts the repo (and tests/) on sys.path, quiet FiftyOne

- the environment (:data:`REPO`, :data:`DATA`, :func:`one_thread_env`);
- a private database (:func:`start_db`, :func:`bench_db`; never FiftyOne's shared default);
- the datasets under ``../shared/data`` as a new user loads them (:func:`load`,
  :func:`load_split`): coco128 (``dev``), coco128-val (``val``), raccoon (VOC, one class);
- injected errors (:func:`inject`: ``grader.noise.inject_errors`` into ``noisy``);
- the metrics of ``grader.evaluate.evaluate_judges`` as one table (:func:`score_rows`,
  :func:`print_scores`: AUROC / AP per error type and score; :func:`recall_line`: recall at
  1x / 2x N deleted boxes) and the figures file (:func:`write_json`);
- wall and CPU time of a block (:func:`timed`); of each ``grade()`` step from its progress
  calls (:func:`timed_progress`), with the gaps between them (:func:`step_account`).

Benches run as scripts (``.venv/bin/python bench/x.py``): bench/ is then on ``sys.path``.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO / "tests", REPO):   # the repo first; tests/ for mongod_helper
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ.setdefault("FIFTYONE_SHOW_PROGRESS_BARS", "false")

DATA = Path(os.environ.get("LABEL_GRADER_DATA", REPO.parent / "shared" / "data"))


def one_thread_env() -> None:
    """Small models on a shared 2-core machine: OpenMP thread pools only add contention. Call
    before numpy / torch are imported (they read it once)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# --- database --------------------------------------------------------------------------------

def start_db(prefix: str = "lg-bench-db-", *, always: bool = False) -> Any | None:
    """A private mongod (returned, to ``stop()``), unless FIFTYONE_DATABASE_URI is set and not
    ``always``; its URI goes into the environment before FiftyOne is imported."""
    if os.environ.get("FIFTYONE_DATABASE_URI") and not always:
        return None
    from mongod_helper import MongodServer

    srv = MongodServer(Path(tempfile.mkdtemp(prefix=prefix))).start()
    os.environ["FIFTYONE_DATABASE_URI"] = srv.uri
    return srv


@contextmanager
def bench_db(prefix: str = "lg-bench-db-", *, always: bool = False) -> Iterator[None]:
    """The bench's own database for the ``with`` block (:func:`start_db`), stopped and its
    files removed after (each is a few hundred MB: left behind, 200 bench runs filled the disk)."""
    import shutil

    srv = start_db(prefix, always=always)
    try:
        yield
    finally:
        if srv is not None:
            srv.stop()
            shutil.rmtree(srv.dbpath, ignore_errors=True)


# --- datasets --------------------------------------------------------------------------------

SPLITS = {"dev": "coco128", "val": "coco128-val"}


def load(data: str, name: str | None = None, *, overwrite: bool = True):
    """``data`` (``coco128`` / ``dev``, ``coco128-val`` / ``val``, ``raccoon``, ``pennfudan``) under
    :data:`DATA` into a dataset ``name`` with its labels in ``ground_truth``."""
    import fiftyone as fo

    from grader import io

    data = SPLITS.get(data, data)
    name = name or f"bench-{data}"
    root = DATA / data
    if data == "coco128":
        return io.load_coco(str(root / "images"), str(root / "labels.json"), name=name,
                            overwrite=overwrite)
    if data == "coco128-val":
        return io.load_yolo(str(root / "images"), str(root / "labels"),
                            str(root / "classes.yaml"), name=name, overwrite=overwrite)
    if data == "raccoon":
        if overwrite and fo.dataset_exists(name):
            fo.delete_dataset(name)
        return fo.Dataset.from_dir(dataset_type=fo.types.VOCDetectionDataset,
                                   data_path=str(root / "images"),
                                   labels_path=str(root / "annotations"),
                                   label_field="ground_truth", name=name)
    if data == "pennfudan":
        return io.load_pennfudan(str(root), name=name, overwrite=overwrite)
    raise ValueError(f"unknown dataset {data!r}")


def load_split(split: str, prefix: str = "C-bench"):
    """coco128 (``dev``) or coco128-val (``val``) as ``<prefix>-coco128[-val]``."""
    return load(split, f"{prefix}-{SPLITS[split]}")


def rename_classes(ds, to: Callable[[str], str], classes: list[str]) -> None:
    """Relabel every ``ground_truth`` box ``c`` as ``to(c)`` (a taxonomy the shipped models
    never saw); ``classes`` become the dataset's default classes."""
    labels = ds.values("ground_truth.detections.label")
    ds.set_values("ground_truth.detections.label",
                  [[to(c) for c in ls] if ls else ls for ls in labels])
    ds.default_classes = classes
    ds.save()


# --- injected errors -------------------------------------------------------------------------

def inject(ds, *, seed: int = 0, rate: float | None = None,
           rates: Mapping[str, float] | None = None, field: str = "noisy", **kw):
    """``grader.noise.inject_errors`` from ``ground_truth`` into ``field``: ``rate`` of every
    error type, or ``rates`` per type, or the noise module's defaults. Returns its report."""
    from grader.noise import ERROR_TYPES, inject_errors

    if rate is not None:
        rates = {t: rate for t in ERROR_TYPES}
    if rates is not None:
        kw["rates"] = dict(rates)
    return inject_errors(ds, "ground_truth", field, seed=seed, overwrite=True, **kw)


# --- metrics ---------------------------------------------------------------------------------

def finite(x) -> float:
    """``x`` as a float, NaN where it is None or not finite (means over seeds skip it)."""
    return float(x) if x is not None and math.isfinite(x) else float("nan")


def score_rows(result: Mapping, select: Callable[[str, str], bool] | list[tuple[str, str]]
               ) -> list[tuple[str, str, Mapping]]:
    """``(error type, score, row)`` of ``evaluate_judges``' per-label table (``row``: ``auroc``,
    ``ap``, ...): those ``select(err, name)`` keeps, or the listed ``(err, name)`` pairs in
    that order (absent ones skipped)."""
    gt = result["gt"]
    if callable(select):
        return [(err, name, row) for err, rows in gt.items()
                for name, row in sorted(rows.items()) if select(err, name)]
    return [(err, name, gt[err][name]) for err, name in select
            if name in gt.get(err, {})]


def print_scores(result: Mapping, select, figures: dict | None = None,
                 label: Callable[[str], str] = str) -> None:
    """One line per selected score (:func:`score_rows`): error type, score, AUROC, AP; the AUROC
    also into ``figures["auroc"]["<err>:<score>"]`` where given."""
    print(f"{'error':10s} {'score':34s} {'AUROC':>7s} {'AP':>7s}")
    for err, name, row in score_rows(result, select):
        print(f"{err:10s} {label(name):34s} {row['auroc']:7.3f} {row['ap']:7.3f}")
        if figures is not None:
            figures.setdefault("auroc", {})[f"{err}:{label(name)}"] = row["auroc"]


def recall_line(name: str, rows, width: int = 38) -> str:
    """Recall of the deleted boxes among the top 1x / 2x N candidates of one score, mean over
    seeds: ``rows`` = ``[(recall@1xN, recall@2xN[, ceiling])]`` (``evaluate_judges``'
    ``overlooked`` rows; the ceiling: share of deleted boxes any candidate covers)."""
    import numpy as np

    a = np.array(rows)
    line = f"{name:{width}s} recall@1xN {a[:, 0].mean():.3f}  recall@2xN {a[:, 1].mean():.3f}"
    if a.shape[1] > 2:
        line += (f"  ceiling {a[:, 2].mean():.3f}  (2xN / ceiling "
                 f"{a[:, 1].mean() / max(a[:, 2].mean(), 1e-9):.2f})")
    return line


def write_json(path: str | None, figures: Mapping) -> None:
    """The figures to ``path`` (nothing when None: the bench was not asked for a file)."""
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=1)


@contextmanager
def timed(out: dict, key: str) -> Iterator[None]:
    """Wall and CPU seconds of the block into ``out[key]`` / ``out[key + "_cpu"]`` (CPU time is
    the steadier figure on a shared machine)."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        out[key] = time.perf_counter() - t0
        out[key + "_cpu"] = time.process_time() - c0


def timed_progress(times: dict) -> Callable[[str, int, int], None]:
    """A ``grade()`` progress callback that records each step's first and last call:
    ``times[step] = [wall first, wall last, CPU first, CPU last]`` (``perf_counter`` /
    ``process_time``; the step's span is ``v[1] - v[0]``)."""
    def cb(step: str, done: int, total: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        t = times.setdefault(step, [now, now, cpu, cpu])
        t[1], t[3] = now, cpu
    return cb


def step_account(times: Mapping[str, Sequence[float]], t0: float, t1: float
                 ) -> list[tuple[str, float]]:
    """The wall ``[t0, t1]`` of one ``grade()`` run (``perf_counter``) split, in time order, into
    each step's progress span (:func:`timed_progress`) and the gaps around them: ``(name,
    seconds)``, a gap named ``"before <step>"`` or ``"after <last step>"``. The seconds sum to
    ``t1 - t0``: a gap holds what no progress call brackets (a step's setup, DB reads and first
    batch before its first call; its DB writes after its last; the checks between steps)."""
    rows: list[tuple[str, float]] = []
    cursor = t0
    for step, v in sorted(times.items(), key=lambda kv: kv[1][0]):
        first, last = min(max(v[0], cursor), t1), min(v[1], t1)
        rows.append((f"before {step}", first - cursor))
        # a span overlapping the previous one (steps do not nest today) counts once
        rows.append((step, max(0.0, last - first)))
        cursor = max(first, last)
    rows.append((f"after {rows[-1][0]}" if rows else "no progress calls", t1 - cursor))
    return rows
