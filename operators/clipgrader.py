"""Operators: grade, fine-tune and evaluate ClipGrader (thin adapters over ``grader.judges.clipgrader``)."""
from __future__ import annotations

import fiftyone.operators.types as types

from ._common import (GRADED_FIELD, EvaluateOperator, GraderOperator, TrainOperator,
                      add_quality_thresholds, evaluation_result, progress_callback,
                      quality_thresholds)

# Mirrors grader.judges.clipgrader.model (not imported here so loading the plugin doesn't import torch).
DEFAULT_MODEL = "ViT-L-14-336"
DEFAULT_PRETRAINED = "openai"


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _add_model_inputs(inputs: types.Object, allow_checkpoint: bool = True,
                      checkpoint_label: str = "Fine-tuned ClipGrader checkpoint") -> None:
    """Model source: an open_clip name + pretrained tag/file, or a ClipGrader checkpoint."""
    if allow_checkpoint:
        inputs.str("checkpoint", required=False, label=checkpoint_label,
                   description="Path to best.pt/last.pt written by train_clipgrader; when set, "
                               "the model name and pretrained fields are ignored")
    inputs.str("model_name", default=DEFAULT_MODEL, label="open_clip architecture",
               description="ViT-L-14-336 is the paper's best; ViT-B-32 is the cheap option")
    inputs.str("pretrained", default=DEFAULT_PRETRAINED, label="Pretrained tag or weights file",
               description="open_clip pretrained tag (e.g. 'openai'), needing network or a warm "
                           "cache, or a local weights file path")
    inputs.str("device", default=_default_device(), label="Device (cpu / cuda)")


def _add_precision_input(inputs: types.Object) -> None:
    choices = types.Dropdown(label="Precision")
    for c in ("fp32", "bf16", "fp16"):
        choices.add_choice(c, label=c)
    inputs.enum("precision", choices.values(), default="fp32", label="Precision",
                description="bf16/fp16 run the image tower under autocast (faster on GPUs)",
                view=choices)


def _model_kwargs(p: dict) -> dict:
    return {"model_name": p.get("model_name") or DEFAULT_MODEL,
            "pretrained": p.get("pretrained") or None,
            "checkpoint": p.get("checkpoint") or None,
            "device": p.get("device") or _default_device()}


def _inference_kwargs(p: dict) -> dict:
    return {**_model_kwargs(p), "precision": p.get("precision") or "fp32"}


class GradeClipGrader(GraderOperator):
    op_name = "grade_clipgrader"
    label = "label-grader: grade boxes with ClipGrader"
    description = "CLIP grades every box as good / bad / background (zero-shot or fine-tuned)"
    title = "ClipGrader: grade boxes"
    result_title = "ClipGrader results"
    field = GRADED_FIELD

    def add_inputs(self, ctx, inputs):
        _add_model_inputs(inputs)
        _add_precision_input(inputs)
        inputs.bool("all_classes", default=False, label="Score against all classes",
                    description="Also predict the class (writes clipgrader_class) to catch wrong labels")
        add_quality_thresholds(inputs, "clipgrader")
        inputs.int("batch_size", default=64, min=1, label="Batch size")
        pools = types.RadioGroup()
        pools.add_choice("threads", label="threads")
        pools.add_choice("processes", label="processes")
        inputs.enum("render_pool", pools.values(), default="threads", label="Render images in",
                    view=pools,
                    description="processes: faster on a GPU, where render threads compete with "
                                "the model for Python's GIL")

    def run(self, ctx, view, p):
        from grader.judges.clipgrader import grade_clipgrader

        report = grade_clipgrader(
            view, p.get("field", "ground_truth"), **_inference_kwargs(p),
            all_classes=bool(p.get("all_classes", False)), **quality_thresholds(p),
            batch_size=int(p.get("batch_size", 64)),
            render_pool=p.get("render_pool") or "threads",
            progress=progress_callback(ctx, "ClipGrader"),
        )
        return report.to_dict()


class TrainClipGrader(TrainOperator):
    op_name = "train_clipgrader"
    label = "label-grader: fine-tune ClipGrader on this ground truth"
    description = "Fine-tune CLIP's vision encoder on good/bad/background boxes made from GT"
    title = "ClipGrader: fine-tune"
    result_title = "ClipGrader training"

    def add_inputs(self, ctx, inputs):
        inputs.str("out_dir", required=True, label="Checkpoint folder",
                   description="best.pt, last.pt and history.json are written here")
        _add_model_inputs(inputs, checkpoint_label="Start from a ClipGrader checkpoint (optional)")
        inputs.int("epochs", default=5, min=1, label="Epochs")
        inputs.int("batch_size", default=32, min=2, label="Batch size")
        inputs.float("lr", default=1e-5, label="Learning rate")
        inputs.int("lora_rank", default=0, min=0, label="LoRA rank (0 = train the full vision encoder)")
        inputs.float("val_fraction", default=0.1, min=0.0, max=0.9, label="Validation fraction (by image)")
        inputs.float("min_size", default=20.0, min=0.0, label="Skip objects smaller than (px)")
        inputs.int("seed", default=0, label="Seed")
        inputs.bool("resume", default=True, label="Resume from out_dir/last.pt if present")

    def run(self, ctx, view, p):
        from grader.judges.clipgrader import train_clipgrader

        mk = _model_kwargs(p)
        result = train_clipgrader(
            view, p.get("gt_field", "ground_truth"), p["out_dir"],
            model_name=mk["model_name"], pretrained=mk["pretrained"],
            init_checkpoint=mk["checkpoint"], device=mk["device"],
            epochs=int(p.get("epochs", 5)), batch_size=int(p.get("batch_size", 32)),
            lr=float(p.get("lr", 1e-5)), lora_rank=int(p.get("lora_rank", 0)),
            val_fraction=float(p.get("val_fraction", 0.1)),
            min_size=float(p.get("min_size", 20.0)), seed=int(p.get("seed", 0)),
            resume=bool(p.get("resume", True)),
            progress=progress_callback(ctx, "ClipGrader training step"),
        )
        return result.to_dict()


class EvaluateClipGrader(EvaluateOperator):
    op_name = "evaluate_clipgrader"
    label = "label-grader: evaluate ClipGrader"
    description = "Accuracy, false-positive rate and confusion on good/bad/background boxes from GT"
    title = "ClipGrader: evaluate"
    result_title = "ClipGrader evaluation"

    def add_inputs(self, ctx, inputs):
        _add_model_inputs(inputs)
        _add_precision_input(inputs)
        inputs.float("min_size", default=20.0, min=0.0, label="Skip objects smaller than (px)")
        inputs.int("seed", default=12345, label="Seed")

    def run(self, ctx, view, p):
        from grader.judges.clipgrader import evaluate_clipgrader

        res = evaluate_clipgrader(
            view, p.get("gt_field", "ground_truth"), **_inference_kwargs(p),
            min_size=float(p.get("min_size", 20.0)), seed=int(p.get("seed", 12345)),
            progress=progress_callback(ctx, "ClipGrader evaluation"),
        )
        return evaluation_result(res)


OPERATORS = [GradeClipGrader, TrainClipGrader, EvaluateClipGrader]
