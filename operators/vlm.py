"""Operator: grade labels with a vision-language model (thin adapter over ``grader.judges.vlm``).

The API key is read from a FiftyOne plugin secret (``LABEL_GRADER_VLM_API_KEY`` or
``OPENAI_API_KEY``, declared in fiftyone.yml) or from an environment variable whose *name* is
a parameter; it is never an operator parameter, so it is never logged or stored with the run.
"""
from __future__ import annotations

import os

import fiftyone.operators.types as types

from grader.redact import redact
from grader.judges.vlm import DETECTION_PROMPTS, make_backend, run_vlm_judge
from grader.judges.vlm.backends import VLMBackendError

from ._common import GraderOperator, progress_callback

SECRET_NAMES = ("LABEL_GRADER_VLM_API_KEY", "OPENAI_API_KEY")


def _radio(inputs, name, choices, default, label, description=None):
    group = types.RadioGroup()
    for value, text in choices:
        group.add_choice(value, label=text)
    inputs.enum(name, group.values(), default=default, label=label, description=description,
                view=group)


def _secret(ctx, name: str) -> str | None:
    try:
        val = ctx.secret(name)
    except Exception:  # secrets backend unavailable: treat as unset
        val = None
    if not val:
        try:
            val = ctx.secrets.get(name)
        except Exception:
            val = None
    return val or None


def build_backend(ctx, params: dict):
    """The backend described by the operator's params (the key comes from secrets/env)."""
    kind = params.get("backend", "openai")
    model = params.get("model")
    if not model:
        raise ValueError("model is required: a hub id or local directory (transformers) or the "
                         "served model name (OpenAI-compatible endpoint)")
    if kind == "transformers":
        return make_backend("transformers", model, device=params.get("device") or None,
                            batch_size=int(params.get("batch_size") or 4),
                            max_new_tokens=int(params.get("max_new_tokens") or 64))
    api_key = None
    secret_name = params.get("api_key_secret_name") or "NONE"
    if secret_name in SECRET_NAMES:
        api_key = _secret(ctx, secret_name)
        if api_key is None and not params.get("api_key_env"):
            raise VLMBackendError(f"secret {secret_name} is not set; define it in FiftyOne "
                                  "secrets (or as an environment variable) or choose 'none'")
    return make_backend(
        "openai", model, base_url=params.get("base_url") or "http://localhost:8000/v1",
        api_key=api_key, api_key_env=(params.get("api_key_env") or None) if api_key is None else None,
        concurrency=int(params.get("concurrency") or 4),
        timeout=float(params.get("timeout") or 60.0),
        max_retries=int(params.get("max_retries") if params.get("max_retries") is not None else 4),
        max_tokens=int(params.get("max_new_tokens") or 64),
    )


class RunVLMJudge(GraderOperator):
    op_name = "run_vlm_judge"
    label = "label-grader: grade labels with a vision-language model"
    description = ("Ask a local or OpenAI-compatible VLM whether each box (and each image) "
                   "is labelled correctly; writes vlm_verdict / vlm_reason / vlm_confidence")
    title = "VLM judge"
    result_title = "VLM judge results"
    field = ("label_field", "Labels to grade", "ground_truth")

    def add_inputs(self, ctx, inputs):
        _radio(inputs, "backend", [("openai", "OpenAI-compatible HTTP endpoint"),
                                   ("transformers", "Local transformers model")],
               "openai", "Backend")
        backend = ctx.params.get("backend", "openai")
        if backend == "transformers":
            inputs.str("model", required=True, label="Model (hub id or local directory)",
                       description="e.g. HuggingFaceTB/SmolVLM-256M-Instruct or /models/qwen2-vl")
            inputs.str("device", required=False, label="Device (blank: cuda if available)")
            inputs.int("batch_size", default=4, min=1, label="Batch size")
        else:
            inputs.str("base_url", default="http://localhost:8000/v1", required=True,
                       label="Base URL", description="vLLM, Ollama (http://localhost:11434/v1) "
                                                     "or a hosted API")
            inputs.str("model", required=True, label="Model name served there")
            _radio(inputs, "api_key_secret_name",
                   [(n, n) for n in SECRET_NAMES] + [("NONE", "none")], "NONE",
                   "API key from FiftyOne secret")
            inputs.str("api_key_env", required=False,
                       label="...or from this environment variable (its name, not the key)")
            inputs.int("concurrency", default=4, min=1, max=256, label="Concurrent requests")
            inputs.float("timeout", default=60.0, min=1.0, label="Timeout per request (s)")
            inputs.int("max_retries", default=4, min=0, label="Retries per request")
        inputs.int("max_new_tokens", default=64, min=1, label="Max answer tokens")
        _radio(inputs, "mode", [("detections", "Each box (crop)"),
                                ("samples", "Each image (all boxes + legend)"),
                                ("both", "Both")], "detections", "What to judge")
        _radio(inputs, "prompt", [(k, k) for k in DETECTION_PROMPTS] + [("custom", "custom")],
               "stepwise", "Prompt",
               "stepwise (a reasoning checklist, then yes / no - reason) did better in seed 001")
        if ctx.params.get("prompt") == "custom":
            inputs.str("custom_prompt", required=True, label="Per-box template (use {label})")
            inputs.str("custom_sample_prompt", required=False,
                       label="Per-image template ({labels}, {num_boxes}); blank: stepwise")
        inputs.float("threshold", default=0.5, min=0.0, max=1.0,
                     label="Tag suspect:vlm when P(label correct) <")
        inputs.bool("use_cache", default=True, label="Reuse cached answers")
        inputs.str("cache_dir", required=False,
                   label="Cache directory (blank: $LABEL_GRADER_CACHE_DIR or ~/.cache/label-grader)")
        inputs.bool("overwrite", default=False, label="Overwrite existing per-sample fields",
                    description="Needed only if vlm_sample_* fields exist that this judge did not write")
        inputs.str("run_key", default="vlm_judge", label="Run key")

    def run(self, ctx, view, p):
        try:
            return self._run(ctx, view, p)
        except Exception as e:
            # The error text ends up in the App, logs and (delegated) MongoDB's delegated_ops:
            # it must never carry the key, even quoted inside a library's exception.
            raise _redacted_error(e, _known_secrets(ctx, p)) from None

    def _run(self, ctx, view, p):
        backend = build_backend(ctx, p)
        prompt, sample_prompt = p.get("prompt", "stepwise"), None
        if prompt == "custom":
            prompt = p["custom_prompt"]
            sample_prompt = p.get("custom_sample_prompt") or "stepwise"
        cache = (p.get("cache_dir") or None) if p.get("use_cache", True) else False
        report = run_vlm_judge(
            view, backend, label_field=p.get("label_field", "ground_truth"),
            mode=p.get("mode", "detections"), prompt=prompt, sample_prompt=sample_prompt,
            threshold=float(p.get("threshold", 0.5)), cache=cache,
            progress=progress_callback(ctx, "VLM judge"), run_key=p.get("run_key") or "vlm_judge",
            overwrite=bool(p.get("overwrite", False)),
        )
        return report.to_dict()


def _known_secrets(ctx, params) -> list[str]:
    out = [_secret(ctx, n) for n in SECRET_NAMES]
    env = params.get("api_key_env")
    if env:
        out.append(os.environ.get(str(env)))
    return [s for s in out if s]


def _redacted_error(exc: Exception, secrets) -> Exception:
    msg = redact(str(exc), secrets)
    try:
        return type(exc)(msg)
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {msg}")


OPERATORS = [RunVLMJudge]
