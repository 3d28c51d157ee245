"""Text prompts: "good/bad bounding box of {class}" per class, plus one "background" prompt."""
from __future__ import annotations

from typing import Sequence

QUALITIES = ("good", "bad", "background")
GOOD, BAD, BACKGROUND = QUALITIES
BACKGROUND_PROMPT = "background"


def prompt_for(label: str | None, quality: str) -> str:
    """The prompt of one (class, quality) target; background ignores the class."""
    if quality == BACKGROUND:
        return BACKGROUND_PROMPT
    if quality not in (GOOD, BAD):
        raise ValueError(f"unknown quality '{quality}', expected one of {QUALITIES}")
    return f"{quality} bounding box of {label}"


def class_prompts(classes: Sequence[str]) -> list[str]:
    """All prompts in index order: ``[good c0, bad c0, good c1, bad c1, ..., background]``.

    ``good`` of class ``k`` is at ``2k``, ``bad`` at ``2k + 1``, background is last.
    """
    out = []
    for c in classes:
        out += [prompt_for(c, GOOD), prompt_for(c, BAD)]
    out.append(BACKGROUND_PROMPT)
    return out


def target_index(class_index: int | None, quality: str, num_classes: int) -> int:
    """Index into :func:`class_prompts` of a (class, quality) target."""
    if quality == BACKGROUND:
        return 2 * num_classes
    return 2 * int(class_index) + (0 if quality == GOOD else 1)
