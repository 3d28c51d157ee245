"""On-disk cache of VLM answers (sqlite), so re-runs and interrupted runs do not pay twice.

The key hashes what determines the answer: the image (path + size + mtime, so an edited file
misses), the box, the class (or every box and class for per-sample questions), the exact
prompt text, the rendering settings and the model id. Credentials never enter the key. The raw
answer text and yes-probability are stored, not the parsed verdict, so parser improvements
apply to cached answers.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

DEFAULT_DIR_ENV = "LABEL_GRADER_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$LABEL_GRADER_CACHE_DIR`` or ``~/.cache/label-grader``."""
    return Path(os.environ.get(DEFAULT_DIR_ENV) or Path.home() / ".cache" / "label-grader")


def image_identity(filepath: str) -> tuple[str, int, int]:
    """``(abs path, size, mtime_ns)``; raises ``OSError`` when the file is missing."""
    st = os.stat(filepath)
    return os.path.abspath(filepath), int(st.st_size), int(st.st_mtime_ns)


def make_key(*, image: tuple, model_id: str, prompt: str, subject: Any, render: Any) -> str:
    """sha256 over a canonical JSON of the inputs that determine an answer."""
    blob = json.dumps({"image": list(image), "model": model_id, "prompt": prompt,
                       "subject": subject, "render": render}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def round_box(box) -> list[float]:
    return [round(float(v), 6) for v in box]


class VLMCache:
    """A tiny thread-safe key -> (text, yes_prob) store in one sqlite file.

    Every :meth:`put` commits, so an interrupted run keeps the answers it already paid for.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        path = Path(path) if path is not None else default_cache_dir()
        if path.suffix != ".sqlite":
            path = path / "vlm_cache.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, text TEXT, "
                         "yes_prob REAL, model TEXT, created REAL)")
        self._db.commit()
        self.hits = self.misses = 0

    def get(self, key: str) -> tuple[str, float | None] | None:
        with self._lock:
            row = self._db.execute("SELECT text, yes_prob FROM answers WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return row[0], row[1]

    def put(self, key: str, text: str, yes_prob: float | None, model_id: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)",
                             (key, text, yes_prob, model_id, time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def clear(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM answers")
            self._db.commit()

    def close(self) -> None:
        with self._lock:
            self._db.close()
