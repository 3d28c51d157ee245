"""A run's account of what it did: counts of scored labels and of every skip, by reason."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunReport:
    """What a judge run processed, wrote and skipped. ``skipped`` maps reason -> count."""

    judge: str
    samples_seen: int = 0
    samples_scored: int = 0
    labels_scored: int = 0
    skipped: Counter = field(default_factory=Counter)
    tagged: Counter = field(default_factory=Counter)
    fields: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        """Count ``n`` items skipped for ``reason`` (a short snake_case key)."""
        if n:
            self.skipped[reason] += n

    def absorb(self, other: "RunReport") -> None:
        """Add ``other``'s counts (the same judge run over another part of the collection)."""
        self.samples_seen += other.samples_seen
        self.samples_scored += other.samples_scored
        self.labels_scored += other.labels_scored
        self.skipped.update(other.skipped)
        self.tagged.update(other.tagged)

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge,
            "samples_seen": self.samples_seen,
            "samples_scored": self.samples_scored,
            "labels_scored": self.labels_scored,
            "skipped": dict(self.skipped),
            "tagged": dict(self.tagged),
            "fields": list(self.fields),
            "info": dict(self.info),
        }

    def summary(self) -> str:
        """One human-readable paragraph."""
        lines = [
            f"[{self.judge}] samples: {self.samples_scored}/{self.samples_seen} scored, "
            f"labels scored: {self.labels_scored}"
        ]
        if self.skipped:
            lines.append("  skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())))
        if self.tagged:
            lines.append("  tagged: " + ", ".join(f"{k}={v}" for k, v in sorted(self.tagged.items())))
        for k, v in self.info.items():
            lines.append(f"  {k}: {_short(v)}")
        return "\n".join(lines)


def _short(value: Any, limit: int = 160) -> str:
    """``str(value)``, cut to about ``limit`` characters (with the item count of a long list or
    mapping) so one long info entry does not bury the rest of a summary; ``to_dict`` has all."""
    text = str(value)
    if len(text) <= limit:
        return text
    n = f" ({len(value)} items)" if isinstance(value, (list, tuple, dict, set)) else ""
    return text[:limit].rstrip() + "…" + n
