"""Prompt templates for the VLM judge.

Per-detection templates see one crop with the box drawn in magenta and get ``{label}``;
per-sample templates see the whole image with every box in its own colour, a numbered legend,
and get ``{labels}`` (``"0: cat, 1: dog"``) and ``{num_boxes}``. Every template asks for the
answer word first, so token probabilities at the first step are meaningful. ``stepwise`` follows
seed 001 (a reasoning checklist, then one line ``yes`` / ``no - reason``), which did better
than the plain question there.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

DETECTION_PROMPTS = {
    "yesno": (
        "The magenta box in this image is labelled \"{label}\". Is that label correct for the "
        "object inside the box, and does the box fit the object? Answer \"yes\" or \"no\" first, "
        "then give a one-sentence reason."
    ),
    "stepwise": (
        "You are an expert quality controller for object-detection labels.\n"
        "The image is a crop around one annotated object; the annotation box is drawn in "
        "magenta and its class label is \"{label}\".\n"
        "Think step by step in your head:\n"
        "1. What object is inside the magenta box?\n"
        "2. Is it a \"{label}\"?\n"
        "3. Does the box fit that object tightly (not cutting it off, not mostly background, "
        "not covering several objects)?\n"
        "After your internal reasoning, output only one line:\n"
        "- \"yes\" if and only if the object is a \"{label}\" and the box fits it well;\n"
        "- \"no - <one-sentence reason>\" otherwise.\n"
        "Do not reveal your reasoning."
    ),
}

SAMPLE_PROMPTS = {
    "yesno": (
        "This image shows {num_boxes} annotated boxes, each in its own colour and numbered as in "
        "the legend on the right: {labels}. Is every box correctly labelled and well placed, with "
        "no object of these kinds left unannotated? Answer \"yes\" or \"no\" first, then give a "
        "one-sentence reason."
    ),
    "stepwise": (
        "You are an expert quality controller for object-detection labels.\n"
        "The image shows {num_boxes} annotated boxes, each in its own colour and numbered; the "
        "legend on the right lists them: {labels}.\n"
        "Think step by step in your head:\n"
        "1. List the objects you visually see.\n"
        "2. Compare them with the annotated boxes and their classes.\n"
        "3. For every box, judge whether its class is right and it fits its object tightly.\n"
        "4. Check for errors: missing objects, wrong classes, poorly fitting boxes, extra boxes "
        "on nothing.\n"
        "After your internal reasoning, output only one line:\n"
        "- \"yes\" if and only if all objects are correctly annotated and every box is good;\n"
        "- \"no - <one-sentence reason naming the box number>\" otherwise.\n"
        "Do not reveal your reasoning."
    ),
}

_DETECTION_FIELDS = {"label"}
_SAMPLE_FIELDS = {"labels", "num_boxes"}


@dataclass(frozen=True)
class PromptTemplate:
    """A named template; ``text`` uses ``str.format`` placeholders."""

    name: str
    text: str
    mode: str  # "detection" or "sample"

    def format(self, **values) -> str:
        return self.text.format(**values)


def _placeholders(text: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(text) if f}


def get_prompt(prompt: str, mode: str = "detection") -> PromptTemplate:
    """A built-in template by name (``yesno``/``stepwise``) or a custom template string.

    A custom detection template must contain ``{label}``; a custom sample template may use
    ``{labels}`` and ``{num_boxes}``. Unknown placeholders are rejected up front rather than
    failing mid-run.
    """
    table = DETECTION_PROMPTS if mode == "detection" else SAMPLE_PROMPTS
    allowed = _DETECTION_FIELDS if mode == "detection" else _SAMPLE_FIELDS
    if prompt in table:
        return PromptTemplate(prompt, table[prompt], mode)
    try:
        fields = _placeholders(prompt)
    except ValueError as e:
        raise ValueError(f"invalid {mode} prompt template: {e}") from e
    if not fields and len(prompt.split()) <= 2:
        raise ValueError(f"unknown {mode} prompt {prompt!r}; built-ins: {sorted(table)} "
                         "or a template string")
    unknown = fields - allowed
    if unknown:
        raise ValueError(f"{mode} prompt template uses unknown placeholders {sorted(unknown)}; "
                         f"allowed: {sorted(allowed)}")
    if mode == "detection" and "label" not in fields:
        raise ValueError("a custom detection prompt must name the class with {label}")
    return PromptTemplate("custom", prompt, mode)


def format_sample_labels(labels: list[str]) -> str:
    """``"0: cat, 1: dog"`` (the legend's numbering), or a note that nothing is annotated."""
    if not labels:
        return "(no boxes are annotated)"
    return ", ".join(f"{i}: {lab}" for i, lab in enumerate(labels))
