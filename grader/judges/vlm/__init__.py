"""VLM judge: local ``transformers`` or OpenAI-compatible HTTP vision-language models grade
rendered labels with a verdict, a reason and a confidence.

SDK::

    from grader.judges.vlm import make_backend, run_vlm_judge
    backend = make_backend("openai", model="Qwen/Qwen2.5-VL-7B-Instruct",
                           base_url="http://localhost:8000/v1", api_key_env="OPENAI_API_KEY")
    report = run_vlm_judge(dataset.view(), backend, label_field="ground_truth", mode="both")
"""
from __future__ import annotations

from typing import Any

from .backends import VLMBackend, VLMBackendError, VLMRequest, VLMResponse
from .cache import VLMCache, default_cache_dir
from .parse import ParsedAnswer, parse_answer
from .prompts import DETECTION_PROMPTS, SAMPLE_PROMPTS, get_prompt

BACKENDS = ("transformers", "openai")
_JUDGE_NAMES = ("TAG", "judge_detections", "judge_samples", "run_vlm_judge")


def __getattr__(name: str):
    # The judge needs FiftyOne; backends, parser and cache do not (e.g. on a bare GPU box).
    if name in _JUDGE_NAMES:
        from . import judge

        return getattr(judge, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def make_backend(kind: str, model: str, **kwargs: Any) -> VLMBackend:
    """``"transformers"`` (hub id or local directory) or ``"openai"`` (chat-completions URL)."""
    if kind in ("transformers", "local"):
        from .local import TransformersBackend

        return TransformersBackend(model, **kwargs)
    if kind in ("openai", "http"):
        from .openai_http import OpenAIBackend

        return OpenAIBackend(model, **kwargs)
    raise ValueError(f"unknown VLM backend {kind!r}; choose one of {BACKENDS}")


__all__ = [
    "BACKENDS", "DETECTION_PROMPTS", "SAMPLE_PROMPTS", "TAG", "ParsedAnswer", "VLMBackend",
    "VLMBackendError", "VLMCache", "VLMRequest", "VLMResponse", "default_cache_dir",
    "get_prompt", "judge_detections", "judge_samples", "make_backend", "parse_answer",
    "run_vlm_judge",
]
