"""One redaction function for every error message and stored text (run records, fix log,
VLM reasons/errors, operator errors): credentials never leave the process in plain text."""
from __future__ import annotations

import re
from typing import Iterable

MASK = "[REDACTED]"

_PATTERNS = [
    # Authorization: Bearer xxx / Authorization: Basic xxx (header dumps, echoed request bodies)
    re.compile(r"(?i)(authorization\"?'?\s*[:=]\s*\"?'?)(?:(?:bearer|basic|token)\s+)?[^\s\"',;}]+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    # api_key=..., "api_key": "...", x-api-key: ..., token=..., password=..., secret=...
    re.compile(r"(?i)((?:x-)?(?:api[_-]?key|access[_-]?token|auth[_-]?token|token|secret|password|passwd)"
               r"\"?'?\s*[:=]\s*\"?'?)[^\s\"'&,;}]+"),
    # OpenAI-style keys anywhere (sk-..., sk-proj-...)
    re.compile(r"()\bsk-[A-Za-z0-9_-]{6,}"),
]


def redact(text, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given ``secrets`` and anything that looks like a credential masked.

    Removes each secret verbatim (and stripped, and its ``repr`` form, so a key with a trailing
    newline is caught in both shapes), ``Authorization``/``Bearer`` header values,
    ``api_key=``/``"token": ...``-style pairs and ``sk-...`` tokens. Non-strings are ``str()``-ed.
    """
    if text is None:
        return ""
    s = text if isinstance(text, str) else str(text)
    for secret in secrets or ():
        if not secret or not isinstance(secret, str):
            continue
        forms = {secret, secret.strip(), repr(secret)[1:-1], repr(secret.strip())[1:-1]}
        for f in sorted((f for f in forms if len(f) >= 4), key=len, reverse=True):
            s = s.replace(f, MASK)
    for pat in _PATTERNS:
        s = pat.sub(lambda m: m.group(1) + MASK, s)
    return s


def redact_obj(obj, secrets: Iterable[str] = ()):
    """:func:`redact` applied to every string inside nested dicts/lists/tuples (for stored records)."""
    secrets = list(secrets or ())
    if isinstance(obj, str):
        return redact(obj, secrets)
    if isinstance(obj, dict):
        return {k: redact_obj(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v, secrets) for v in obj)
    return obj
