"""The one small interface every VLM backend implements, and the request/response records.

A backend consumes a stream of ``(key, VLMRequest)`` pairs and yields ``(key, VLMResponse)``
pairs as answers arrive (not necessarily in order). Taking an iterator rather than a list lets
the judge render the next images while earlier requests are still in flight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Iterator, Protocol, runtime_checkable

from PIL import Image


class VLMBackendError(RuntimeError):
    """A backend cannot work at all (bad endpoint, rejected key, unknown model, no weights).

    Per-request failures that survive retries are reported as ``VLMResponse.error`` instead.
    """


@dataclass
class VLMRequest:
    """One question about one image."""

    image: Image.Image
    prompt: str


@dataclass
class VLMResponse:
    """The model's answer text and, where the backend exposes token probabilities,
    P(yes) / (P(yes) + P(no)) at the answer step. ``error`` is set when no answer came back."""

    text: str | None
    yes_prob: float | None = None
    error: str | None = None


@runtime_checkable
class VLMBackend(Protocol):
    """What the judge needs from a backend."""

    #: Identifies the model in cache keys and run records (never contains a credential).
    model_id: str

    def stream(self, requests: Iterable[tuple[Hashable, VLMRequest]]
               ) -> Iterator[tuple[Hashable, VLMResponse]]:
        """Answer every request; yield each ``(key, response)`` as soon as it is ready."""
        ...

    def describe(self) -> dict[str, Any]:
        """Backend settings safe to store in a run record (no secrets)."""
        ...
