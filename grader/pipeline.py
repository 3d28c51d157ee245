"""One call for everything (`grader.grade`): run every judge that can run on a collection, then the ensemble.

``grade(collection)`` is what a new user calls. Its defaults are the recommended settings for
the best ranking; every judge stays callable on its own for finer control.

Each judge is one :class:`Step` in :data:`STEPS` (in order). A step decides from the
:class:`GradeContext` whether it can run here (it returns the reason when it cannot) and
otherwise runs its judge and returns the judge's :class:`RunReport`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from .cache import boxgrader_cache_root, label_content_hash  # noqa: F401 (re-exported)
from .classes import dataset_spellings, known_class_share, respell
# SHIPPED_BOXGRADER: the box grader grade() runs when the caller gives no checkpoint and most
# labels are of classes it was trained on (the operators and benches import it from here)
from .judges.boxgrader import SHIPPED, SHIPPED_CHECKPOINT as SHIPPED_BOXGRADER
from .report import RunReport

#: Field the default detector's predictions go to when the caller brings none.
DEFAULT_PRED_FIELD = "lg_predictions"
DEFAULT_DETECTOR = "yolox-nano"


@dataclass
class GradeContext:
    """What every step sees: the collection, the fields and the caller's options."""

    collection: Any
    gt_field: str
    pred_field: str | None
    options: dict[str, Any]
    progress: Callable[[str, int, int], None]
    #: the loaded detector (an ArrayDetector, or a FiftyOne model), shared by every step
    detector: Any = None
    #: what a step's ``can_run`` resolved and its ``run`` uses (decided once, not twice)
    resolved: dict[str, Any] = field(default_factory=dict)

    def opt(self, step: str) -> dict[str, Any]:
        """Keyword options for one step (``options[step]``, a dict; ``False`` disables it)."""
        o = self.options.get(step, {})
        return dict(o) if isinstance(o, dict) else {}

    def enabled(self, step: str) -> bool:
        return self.options.get(step, True) is not False


@dataclass
class Step:
    name: str
    #: returns None when the step can run, else the reason it is skipped
    can_run: Callable[[GradeContext], str | None]
    run: Callable[[GradeContext], RunReport]


@dataclass
class GradeReport:
    """One report for the whole run: each judge's report and why any judge did not run."""

    reports: dict[str, RunReport] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)
    pred_field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"reports": {k: r.to_dict() for k, r in self.reports.items()},
                "not_run": dict(self.not_run), "pred_field": self.pred_field}

    def summary(self) -> str:
        parts = [r.summary() for r in self.reports.values()]
        parts += [f"[{k}] not run: {why}" for k, why in self.not_run.items()]
        return "\n".join(parts)


# --- steps --------------------------------------------------------------------------------

def _has_preds(ctx: GradeContext) -> str | None:
    return None if ctx.pred_field else "no predictions (pass pred_field= or detector=)"


def _run_detector_step(ctx: GradeContext) -> RunReport:
    from .detectors import run_detector

    o = ctx.opt("detector")
    o.setdefault("overwrite", False)
    rep = run_detector(ctx.collection, model=ctx.detector, label_field=DEFAULT_PRED_FIELD,
                       gt_field=ctx.gt_field,
                       progress=lambda d, t: ctx.progress("detector", d, t), **o)
    ctx.pred_field = DEFAULT_PRED_FIELD
    return rep


#: Below this share of labels of the shipped detector's classes, grade() fine-tunes YOLOX-Nano
#: on the labels' own classes (out-of-fold predictions) instead of predicting COCO's classes.
FINETUNE_MAX_KNOWN = 0.5
#: On a CPU, unless the caller sets ``max_images``, each fold model trains on at most this many
#: images (a random sample of the other folds'): training time stays bounded however large the
#: dataset (raccoon's 100 images per fold: 163-177 s for both folds on one thread, training and
#: predicting; about twice that at the cap); every image is still predicted.
FINETUNE_CPU_MAX_IMAGES = 200
#: Fewer images than this and grade() does not fine-tune unless asked: each fold model would
#: learn from a handful of images (and 2 folds need at least 4).
FINETUNE_MIN_IMAGES = 20


def _can_finetune(ctx: GradeContext) -> str | None:
    if ctx.pred_field:
        return "predictions given"
    if getattr(ctx.detector, "name", None) != DEFAULT_DETECTOR:
        return "fine-tuning applies to the shipped YOLOX-Nano only"
    return _finetune_blocker(ctx.collection, ctx.gt_field, ctx.options, ctx.detector.classes)


def _finetune_blocker(collection, gt_field: str, options: dict[str, Any],
                      det_classes) -> str | None:
    from .detectors import torch_yolox

    asked = options.get("finetune")
    explicit = asked is True or isinstance(asked, dict)
    share, counts = known_class_share(collection, gt_field, det_classes)
    if not counts:
        return f"no labels in '{gt_field}'"
    if share >= FINETUNE_MAX_KNOWN and not explicit:
        return f"the shipped detector knows {share:.0%} of these labels' classes"
    if not explicit and len(collection) < FINETUNE_MIN_IMAGES:
        return (f"{len(collection)} images: fewer than {FINETUNE_MIN_IMAGES} to fine-tune a "
                f"detector on (finetune=True runs it anyway)")
    if not torch_yolox.available():
        return "torch and onnx2torch are needed to fine-tune (pip install onnx2torch)"
    return None


def will_finetune(collection, gt_field: str = "ground_truth", **options: Any) -> bool:
    """Whether ``grade(collection, gt_field, **options)`` would fine-tune YOLOX-Nano on the
    labels' classes (minutes on a CPU): the App delegates such runs."""
    from .detectors.base import read_names
    from .detectors.runner import _detectors_dir

    if (options.get("finetune") is False or options.get("pred_field")
            or options.get("detector", DEFAULT_DETECTOR) != DEFAULT_DETECTOR):
        return False
    names = os.path.join(_detectors_dir(None), DEFAULT_DETECTOR, "coco.names")
    if not os.path.isfile(names):   # grade() will say the detector is missing
        return False
    return _finetune_blocker(collection, gt_field, options, read_names(names)) is None


def _run_finetune_step(ctx: GradeContext) -> RunReport:
    from .detectors import torch_yolox
    from .detectors.finetune import crossfit_detector

    o = ctx.opt("finetune")
    kw = {k: o.pop(k) for k in ("conf_threshold", "nms_iou", "overwrite") if k in o}
    if (o.get("device") or torch_yolox.default_device()) == "cpu":
        o.setdefault("max_images", FINETUNE_CPU_MAX_IMAGES)
    rep = crossfit_detector(ctx.collection, ctx.gt_field, DEFAULT_PRED_FIELD, settings=o,
                            progress=lambda d, t: ctx.progress("finetune", d, t), **kw)
    ctx.pred_field = DEFAULT_PRED_FIELD
    ctx.resolved["finetuned"] = True
    return rep


def _can_detect(ctx: GradeContext) -> str | None:
    if ctx.pred_field:
        return "predictions given"
    if ctx.detector is None:
        return "no detector (detector=None)"
    return None


def _needs_detector(ctx: GradeContext) -> str | None:
    return None if ctx.detector is not None else "no detector (detector=None)"


def _run_zoom_step(ctx: GradeContext) -> RunReport:
    from .judges.zoom import run_zoom

    def run(view) -> RunReport:
        return run_zoom(view, ctx.gt_field, detector=ctx.detector,
                        progress=lambda d, t: ctx.progress("zoom", d, t), **ctx.opt("zoom"))

    shared = ctx.resolved.pop("zoom_shared", None)
    if shared is None:
        return run(ctx.collection)
    # scored in the box grader's crop passes; the samples it did not read get their own run
    report, covered = shared
    rest = [i for i in ctx.collection.values("id") if i not in covered]
    if rest:
        report.absorb(run(ctx.collection.select(rest)))
    report.info["samples_in_own_run"] = len(rest)
    return report


#: run_zoom keywords the box grader's shared crop passes honour (the others only tune batching)
_ZOOM_SHARED_KEYS = {"context", "min_crop", "conf_threshold", "low_threshold", "match_iou",
                     "nms_iou", "input_size", "batch_size", "num_workers", "pool"}


def _shared_zoom(ctx: GradeContext, backbone) -> Any:
    """A ``SharedZoom`` when the zoom step would run the box grader's own model on the same
    crops (the shipped YOLOX-Nano file, the box grader's zoom input size), else None."""
    from .detectors.cvdnn import YoloXNano
    from .judges.zoom import SharedZoom, ZoomSettings

    o = ctx.opt("zoom")
    det = ctx.detector
    if (not ctx.enabled("zoom") or not isinstance(det, YoloXNano) or set(o) - _ZOOM_SHARED_KEYS
            or det.model_path != backbone.model_path or "zoom" not in backbone.groups
            or o.get("input_size", 256) != backbone.zoom_size):
        return None
    fields = ZoomSettings.__dataclass_fields__
    return SharedZoom(ZoomSettings(**{k: v for k, v in o.items() if k in fields}),
                      det.classes, det.name)


def _run_overlooked_step(ctx: GradeContext) -> RunReport:
    from .judges.overlooked import find_overlooked

    o = ctx.opt("overlooked")
    if ctx.resolved.get("finetuned") and "pred_field" not in o:
        # The fine-tuned detector's out-of-fold predictions name the labels' own classes; its
        # candidates are used where they find more of the labelled boxes than the COCO
        # detector's mapped ones (a detector fine-tuned on few images per class may not).
        o.update(pred_field=ctx.pred_field, pick_source=True)
    return find_overlooked(ctx.collection, ctx.gt_field, detector=ctx.detector,
                           progress=lambda d, t: ctx.progress("overlooked", d, t), **o)


#: cleanlab options grade() uses unless the caller passes its own: cleanlab's 0.95 is rarely
#: reached by small detectors, so swap and overlooked would stay silent; 0.6 was the best on
#: coco128 dev with YOLOX-Nano (bench/cleanlab_thresholds.py; README "Thresholds for weak
#: detectors"). ``run_cleanlab`` itself keeps cleanlab's own defaults.
CLEANLAB_DEFAULTS: dict[str, Any] = {"high_probability_threshold": 0.6}


def _run_cleanlab_step(ctx: GradeContext) -> RunReport:
    from .judges.cleanlab import run_cleanlab

    return run_cleanlab(ctx.collection, ctx.gt_field, ctx.pred_field,
                        progress=lambda d, t: ctx.progress("cleanlab", d, t),
                        **{**CLEANLAB_DEFAULTS, **ctx.opt("cleanlab")})


#: Share of the labels that must be of the shipped grader's classes for it to run by default.
SHIPPED_BOXGRADER_MIN_KNOWN = 0.5
#: Where the shipped grader runs but at least this share of the labels is of classes it does not
#: know, grade() also trains one on the labels for those (each label is graded by the grader
#: that knows its class): on coco128 with 42 % of the boxes renamed, the shipped grader alone
#: ranked swaps among the own classes at AUROC 0.665 (bench/custom_classes.py --data
#: coco128-mixed).
MIXED_MIN_UNKNOWN = 0.1
#: Below either, grade() does not train a box grader on the labels (too little to learn from).
BOXGRADER_TRAIN_MIN_BOXES = 20
BOXGRADER_TRAIN_MIN_IMAGES = 8
#: ``train_boxgrader`` settings grade() trains with when the shipped grader does not know the
#: classes: chosen for speed at kept quality (docs/clipgrader.md, "Training in grade()").
#: ``boxgrader={"train": {...}}`` overrides any of them.
BOXGRADER_TRAIN_DEFAULTS: dict[str, Any] = {
    # The shipped grader's quality probabilities averaged in (attach_prior): it needs the
    # same features, so the zoom crops are 256 px as its (192 px made training's zoom passes
    # 1.9x cheaper at the same AUROC on coco128 with renamed classes; at 256 the zoom judge
    # reads the grader's own crops instead of cutting its own). Examples per label: see
    # BOXGRADER_EXAMPLES_PER_KIND.
    "quality_prior": SHIPPED,
    # 100 boosting rounds at twice the rate and 63 bins a feature (not 200 and 255): the tree
    # model's CPU time 4x lower at the same AUROC there
    "quality_model": {"max_iter": 100, "learning_rate": 0.1, "max_bins": 63},
    # the training labels graded for quality by models that never saw their image
    "crossfit": 2,
}
#: grade() synthesises about this many bad and as many background examples (at least one and
#: at most four per label): on coco128 with renamed classes (1078 labels), one bad and one
#: background per label (3x fewer zoom passes than 4 + 4) graded as well as 2 + 2 and 4 + 4;
#: small datasets get up to 4 + 4 so the tree model has enough examples to split on.
BOXGRADER_EXAMPLES_PER_KIND = 1000
#: Bumped when the training recipe changes, so cached graders of an older recipe are retrained.
BOXGRADER_TRAIN_VERSION = 2


def boxgrader_train_settings(n_boxes: int, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``train_boxgrader`` keyword arguments grade() uses for ``n_boxes`` labels."""
    k = int(min(4, max(1, round(BOXGRADER_EXAMPLES_PER_KIND / max(n_boxes, 1)))))
    return {**BOXGRADER_TRAIN_DEFAULTS, "per_object": (1, k, k), **(overrides or {})}


def _train_spec(ctx: GradeContext, why_shipped: str) -> tuple[dict[str, Any] | None, str | None]:
    """What grade() would train (and where), or why it does not train: (spec, None) / (None, why)."""
    import re

    train = ctx.opt("boxgrader").get("train", True)
    if train is False:
        return None, why_shipped + " (training disabled: boxgrader={'train': False})"
    from .judges.boxgrader.features import default_detector_path

    det_path = default_detector_path("yolox-nano")
    if not os.path.isfile(det_path):
        return None, (f"{why_shipped}; training one needs YOLOX-Nano at {det_path} "
                      "(set LABEL_GRADER_DETECTORS)")
    h, n_boxes, n_images = label_content_hash(ctx.collection, ctx.gt_field)
    if n_boxes < BOXGRADER_TRAIN_MIN_BOXES or n_images < BOXGRADER_TRAIN_MIN_IMAGES:
        return None, (f"{why_shipped}; too few labels to train one on ({n_boxes} boxes on "
                      f"{n_images} images; needs >= {BOXGRADER_TRAIN_MIN_BOXES} boxes on >= "
                      f"{BOXGRADER_TRAIN_MIN_IMAGES} images)")
    kw = boxgrader_train_settings(n_boxes, train if isinstance(train, dict) else None)
    import hashlib
    import json

    cfg = hashlib.sha1(json.dumps([kw, BOXGRADER_TRAIN_VERSION], sort_keys=True,
                                  default=str).encode()).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", ctx.collection._dataset.name)
    field_ = re.sub(r"[^A-Za-z0-9_.-]+", "_", ctx.gt_field)
    out_dir = os.path.join(boxgrader_cache_root(), f"{name}--{field_}--{h}-{cfg}")
    return {"out_dir": out_dir, "checkpoint": os.path.join(out_dir, "best.pt"), "kwargs": kw,
            "label_hash": h, "boxes": n_boxes, "images": n_images, "why": why_shipped}, None


def _boxgrader_checkpoint(ctx: GradeContext, train: bool = True) -> tuple[str | None, str | None]:
    """(checkpoint, None) to run, or (None, why not).

    The caller's checkpoint, else the shipped grader where it knows most labels' classes, else
    one trained on ``gt_field`` (cached: reused while the labels are unchanged). A trained
    grader is also returned where the shipped one knows most but not all classes (at least
    :data:`MIXED_MIN_UNKNOWN` of the labels unknown to it); wherever it knows some,
    ``ctx.resolved["boxgrader_known"]`` names it to grade the labels of its classes. With
    ``train=False`` a grader still to be trained is left in ``ctx.resolved["boxgrader_train"]``
    and its future path returned; :func:`_ensure_trained` trains it."""
    given = ctx.opt("boxgrader").get("checkpoint")
    if given:
        return given, None
    from .judges.boxgrader.features import default_detector_path

    why, mixed, share = None, None, 0.0
    if not os.path.isfile(SHIPPED_BOXGRADER):
        why = "no shipped box grader"
    else:
        import torch

        classes = set(torch.load(SHIPPED_BOXGRADER, map_location="cpu",
                                 weights_only=False)["classes"])
        share, counts = known_class_share(ctx.collection, ctx.gt_field, classes)
        if not counts:
            return None, f"no labels in '{ctx.gt_field}'"
        total = sum(counts.values())
        knows = f"the shipped box grader knows {round(share * total)}/{total} of these labels' classes"
        if share < SHIPPED_BOXGRADER_MIN_KNOWN:
            why = knows
        elif share <= 1.0 - MIXED_MIN_UNKNOWN:
            # it runs; a grader trained here, where one can be, takes the other classes' labels
            mixed = knows + "; trained for the others"
    spec = None
    if why is not None or mixed is not None:
        spec, why_not = _train_spec(ctx, why or mixed)
        if spec is None and why is not None:
            return None, why_not
    if spec is None:   # the shipped grader for every label
        if not os.path.isfile(default_detector_path("yolox-nano")):
            return None, (f"the shipped box grader needs YOLOX-Nano at "
                          f"{default_detector_path('yolox-nano')} (set LABEL_GRADER_DETECTORS)")
        return SHIPPED_BOXGRADER, None
    ctx.resolved["boxgrader_train"] = spec
    if share > 0:   # the labels of the classes it does know stay with the shipped grader
        ctx.resolved["boxgrader_known"] = SHIPPED_BOXGRADER
    if train:
        _ensure_trained(ctx)
    return spec["checkpoint"], None


def _ensure_trained(ctx: GradeContext) -> dict[str, Any] | None:
    """Train the grader ``ctx.resolved["boxgrader_train"]`` describes unless its cache holds it;
    returns what was trained (or reused) and where, for the report."""
    spec = ctx.resolved.get("boxgrader_train")
    if not spec:
        return None
    if spec.get("done"):
        return spec["done"]
    info = {"why": spec["why"], "field": ctx.gt_field, "label_hash": spec["label_hash"],
            "boxes": spec["boxes"], "images": spec["images"], "out_dir": spec["out_dir"],
            "checkpoint": spec["checkpoint"], "settings": spec["kwargs"]}
    if os.path.isfile(spec["checkpoint"]):
        info["cached"] = True
    else:
        import shutil
        import tempfile
        import time

        from .judges.boxgrader import train_boxgrader

        root = os.path.dirname(spec["out_dir"])
        os.makedirs(root, exist_ok=True)
        # Trained in a scratch folder and moved in whole: a run stopped half-way, or two runs
        # at once, never leave a half-written grader where the cache looks.
        tmp = tempfile.mkdtemp(prefix=".train-", dir=root)
        t0 = time.perf_counter()
        try:
            kw = dict(spec["kwargs"])
            epochs = int(kw.get("epochs", 15))
            n_img = spec["images"]

            folds = int(kw.get("crossfit") or 0)
            start = {"features": 0, "train": n_img, "quality_model": n_img + epochs,
                     "crossfit": n_img + epochs + 1}

            def prog(stage: str, d: int, t: int) -> None:
                # one bar: the feature pass (per image), the epochs, the tree model, the folds
                ctx.progress("boxgrader_train", start.get(stage, 0) + d,
                             n_img + epochs + 1 + folds)

            # the classes of these labels (not the dataset's default_classes, which may be
            # another taxonomy's: their labels would all be skipped as unknown)
            kw.setdefault("classes", sorted(c for c in ctx.collection.distinct(
                f"{ctx.gt_field}.detections.label") if c is not None))
            res = train_boxgrader(ctx.collection, ctx.gt_field, tmp, progress=prog, **kw)
            if res.best_checkpoint is None:
                raise RuntimeError("box grader training wrote no checkpoint")
            for f in os.listdir(tmp):  # the features cache is only for resuming this run
                if f.startswith("features_"):
                    os.remove(os.path.join(tmp, f))
            if os.path.isdir(spec["out_dir"]):
                shutil.rmtree(spec["out_dir"], ignore_errors=True)
            os.replace(tmp, spec["out_dir"])
        finally:
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
        info.update(cached=False, seconds=round(time.perf_counter() - t0, 1),
                    classes=res.classes, good_threshold=res.good_threshold,
                    train_seconds=res.seconds)
    spec["done"] = info
    return info


def will_train_boxgrader(collection, gt_field: str = "ground_truth", **options: Any) -> bool:
    """Whether ``grade(collection, gt_field, **options)`` would train a box grader (none given,
    the shipped one does not fit, none cached for these labels): the App delegates such runs."""
    if options.get("boxgrader", True) is False:
        return False
    ctx = GradeContext(collection, gt_field, None, options, lambda *a: None)
    ckpt, _ = _boxgrader_checkpoint(ctx, train=False)
    return bool(ckpt and ctx.resolved.get("boxgrader_train") and not os.path.isfile(ckpt))


def _can_boxgrade(ctx: GradeContext) -> str | None:
    # Resolved once here (a checkpoint read and a count over every label), used by the run;
    # any training happens in the run.
    ckpt, why = _boxgrader_checkpoint(ctx, train=False)
    ctx.resolved["boxgrader_checkpoint"] = ckpt
    return why


def _run_boxgrader_step(ctx: GradeContext) -> RunReport:
    from .judges.boxgrader import grade_boxgrader, load_boxgrader

    trained = _ensure_trained(ctx)
    opts = ctx.opt("boxgrader")
    opts.pop("train", None)
    opts.pop("checkpoint", None)
    model_path = opts.pop("model_path", None)
    labels = ctx.resolved.get("labels") or []
    grader = load_boxgrader(ctx.resolved["boxgrader_checkpoint"], model_path).respell(labels)
    known = ctx.resolved.get("boxgrader_known")
    known = load_boxgrader(known, model_path).respell(labels) if known else None
    ctx.resolved["boxgrader_graders"] = (grader, known)
    # the zoom judge's crops are the box grader's own: one pass serves both (zoom step below)
    zoom = _shared_zoom(ctx, grader.backbone)
    rep = grade_boxgrader(ctx.collection, ctx.gt_field, grader=grader, zoom=zoom,
                          known_grader=known,
                          progress=lambda d, t: ctx.progress("boxgrader", d, t), **opts)
    if zoom is not None:
        ctx.resolved["zoom_shared"] = (zoom.write(ctx.collection, ctx.gt_field), zoom.covered)
    if trained:
        rep.info["trained"] = trained
    return rep


def _run_consistency_step(ctx: GradeContext) -> RunReport:
    from .judges.consistency import run_consistency

    return run_consistency(ctx.collection, ctx.gt_field,
                           progress=lambda d, t: ctx.progress("consistency", d, t),
                           **ctx.opt("consistency"))


#: options that change how a step works through its data, not what it scores
_BATCHING_KEYS = {"batch_size", "num_workers", "overwrite", "progress"}


def reference_judges(ctx: GradeContext) -> list[str]:
    """The judges of this run whose scores come from the models the shipped ensemble was
    fitted with, so it may read them against its training runs (``reference_judges`` of
    :func:`grader.ensemble.compute_ensemble`): consistency always; the box grader unless the
    caller gave a checkpoint; zoom with the shipped YOLOX-Nano at its defaults; cleanlab on
    predictions ``run_detector`` wrote with YOLOX-Nano at its defaults (recorded on the field:
    :func:`grader.fields.field_model`), at grade()'s thresholds. Your own predictions, another
    detector or a grader of your own score on other scales: their percentiles are read."""
    from . import fields as lgf
    from .detectors.runner import SHIPPED_PREDICTIONS

    out = ["consistency"]
    if not ctx.opt("boxgrader").get("checkpoint"):
        out.append("boxgrader")
    if (getattr(ctx.detector, "name", None) == DEFAULT_DETECTOR
            and not set(ctx.opt("zoom")) - _BATCHING_KEYS):
        out.append("zoom")
    if ctx.pred_field and not ctx.opt("cleanlab") and (
            lgf.field_model(ctx.collection, ctx.pred_field) == SHIPPED_PREDICTIONS):
        out.append("cleanlab")
    return sorted(out)



def _run_ensemble_step(ctx: GradeContext) -> RunReport:
    from .ensemble import compute_ensemble

    o = ctx.opt("ensemble")
    o.setdefault("pred_field", ctx.pred_field)
    o.setdefault("reference_judges", reference_judges(ctx))
    # Where the shipped model does not fit (classes it never saw) the ensemble is fitted on
    # errors injected into a copy, re-scored with the very models this run used.
    ss = dict(o.get("self_supervised") or {})
    ss.setdefault("cleanlab_kwargs", {**CLEANLAB_DEFAULTS, **ctx.opt("cleanlab")})
    if ctx.enabled("zoom") and ctx.detector is not None:
        ss.setdefault("detector", ctx.detector)
        ss.setdefault("zoom_kwargs", ctx.opt("zoom"))
    if ctx.enabled("boxgrader") and ctx.resolved.get("boxgrader_graders"):
        # the copy graded as the labels were: the same graders, routing and spellings
        grader, known = ctx.resolved["boxgrader_graders"]
        ss.setdefault("boxgrader", {"grader": grader, "known_grader": known})
    o["self_supervised"] = ss
    o.setdefault("progress", lambda d, t: ctx.progress("ensemble", d, t))
    return compute_ensemble(ctx.collection, ctx.gt_field, **o)


STEPS: list[Step] = [
    # Classes the shipped detector does not know: YOLOX-Nano fine-tuned on the labels in folds,
    # each image predicted by a model that never saw it. Its predictions then stand in for the
    # detector step's.
    Step("finetune", _can_finetune, _run_finetune_step),
    Step("detector", _can_detect, _run_detector_step),
    Step("cleanlab", _has_preds, _run_cleanlab_step),
    # After cleanlab: merges its candidates into <gt>_overlooked instead of replacing them.
    Step("overlooked", _needs_detector, _run_overlooked_step),
    # The caller's checkpoint (boxgrader={"checkpoint": ".../best.pt"}), else the shipped one
    # where it knows most classes, else one trained on these labels (cached; {"train": False}
    # opts out of training, boxgrader=False out of the step). With both, each label goes to
    # the grader that knows its class (MIXED_MIN_UNKNOWN).
    Step("boxgrader", _can_boxgrade, _run_boxgrader_step),
    # The detector re-run on a crop around every GT box (swap / badloc / spurious evidence):
    # after the box grader, whose crop passes score it where both run the shipped YOLOX-Nano.
    Step("zoom", _needs_detector, _run_zoom_step),
    # Labels only, always runs; after the model judges so their scores pick the weaker box
    # of a duplicate pair.
    Step("consistency", lambda ctx: None, _run_consistency_step),
    # The ensemble always comes last: it reads every score the steps above wrote.
    Step("ensemble", lambda ctx: None, _run_ensemble_step),
]


def _validate(collection, gt_field: str, pred_field: str | None) -> None:
    """Clear errors before anything is written."""
    from . import fields as lgf

    if not hasattr(collection, "_dataset"):
        raise TypeError(f"grade() needs a FiftyOne dataset or view, got {type(collection).__name__}")
    if not len(collection):
        raise ValueError("the collection is empty: nothing to grade")
    lgf.detections_path(collection, gt_field)  # missing field / not Detections -> ValueError
    if pred_field is not None:
        if pred_field == gt_field:
            raise ValueError("pred_field must differ from gt_field")
        lgf.detections_path(collection, pred_field)


def grade(collection, gt_field: str = "ground_truth", pred_field: str | None = None, *,
          detector: Any = DEFAULT_DETECTOR,
          progress: Callable[[str, int, int], None] | None = None,
          **options: Any) -> GradeReport:
    """Run every judge that can run on ``collection`` and the ensemble; return one report.

    ``pred_field``: an existing Detections field of model predictions (``confidence`` at
    least; ``probs`` per class when available). Without one, the ``detector`` predicts into
    ``lg_predictions``. ``detector``: a shipped name (default ``"yolox-nano"``), a path to an
    Ultralytics ``.onnx`` export (pass ``detector_classes=[...]``), a FiftyOne model or an
    ArrayDetector; ``None`` runs only the judges that need no detector. The detector also
    drives the zoom and overlooked judges. ``options``: per-step keyword dicts
    (``cleanlab={...}``, ``zoom={...}``, ``overlooked={...}``, ``ensemble={...}``, ...) or
    ``<step>=False`` to skip a step. Inputs are checked before anything is written.
    """
    from .detectors import load_detector

    _validate(collection, gt_field, pred_field)
    options = dict(options)
    classes = options.pop("detector_classes", None)
    det = None
    labels = collection.distinct(f"{gt_field}.detections.label")
    if detector is not None and detector is not False:
        # Loaded once (files checked here, before any write) and shared by every step.
        det = load_detector(detector, classes=classes)
        spellings = dataset_spellings(det.classes, labels)
        if spellings:
            # labels that spell the detector's classes another way ("Person", "aeroplane"):
            # it predicts in the labels' vocabulary (a copy; the caller's keeps its names)
            det = copy.copy(det)
            det.classes = respell(det.classes, spellings)
    ctx = GradeContext(collection, gt_field, pred_field, options,
                       progress or (lambda step, done, total: None), det)
    ctx.resolved["labels"] = labels
    out = GradeReport()
    for step in STEPS:
        if not ctx.enabled(step.name):
            out.not_run[step.name] = "disabled by the caller"
            continue
        why = step.can_run(ctx)
        if why:
            out.not_run[step.name] = why
            continue
        out.reports[step.name] = step.run(ctx)
    out.pred_field = ctx.pred_field
    return out
