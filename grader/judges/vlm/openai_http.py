"""Backend for any OpenAI-compatible chat-completions endpoint (vLLM, Ollama, hosted APIs).

Requests run in a bounded thread pool (``concurrency``) fed lazily from the judge's render
stream, so rendering the next crops overlaps with waiting on the network. Each request has a
timeout and is retried with exponential backoff on timeouts, connection errors, 429 and 5xx;
a 429/503 ``Retry-After`` pauses every worker, not just the one that got it. The API key is
held in memory only: it goes into the ``Authorization`` header and nowhere else (not in
``repr``, logs, errors, :meth:`describe`, or cache keys).
"""
from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, Hashable, Iterable, Iterator

import requests

from ...redact import redact
from .backends import VLMBackendError, VLMRequest, VLMResponse
from .parse import answer_step, yes_probability

log = logging.getLogger(__name__)

_END = object()


def encode_image(image, fmt: str = "JPEG", quality: int = 90) -> str:
    """A ``data:`` URL holding ``image`` (PIL) encoded as JPEG or PNG."""
    buf = io.BytesIO()
    if fmt.upper() == "JPEG":
        image.convert("RGB").save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        image.save(buf, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"


class VLMEndpointDown(VLMBackendError):
    """The endpoint is dead or hanging: N consecutive requests got no HTTP answer at all."""


def check_api_key(key: str | None, where: str = "the API key") -> str | None:
    """``key`` stripped of surrounding whitespace (env files often end it with a newline);
    ``VLMBackendError`` (never quoting the key) if it is empty or holds whitespace/control
    characters inside, which no HTTP header can carry."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise VLMBackendError(f"{where} must be a string")
    k = key.strip()
    if not k:
        raise VLMBackendError(f"{where} is empty (only whitespace)")
    bad = [c for c in k if c.isspace() or ord(c) < 32 or ord(c) == 127]
    if bad:
        raise VLMBackendError(f"{where} contains {len(bad)} whitespace or control character(s) "
                              "inside it; check the env file or secret (the key is not shown)")
    return k


def resolve_api_key(api_key: str | None = None, api_key_env: str | None = None) -> str | None:
    """The key passed directly, else the value of the environment variable named ``api_key_env``;
    stripped and checked (:func:`check_api_key`)."""
    if api_key:
        return check_api_key(api_key)
    if api_key_env:
        val = os.environ.get(api_key_env)
        if not val:
            raise VLMBackendError(
                f"environment variable {api_key_env!r} (named by api_key_env) is not set or empty")
        return check_api_key(val, f"the API key in ${api_key_env}")
    return None


class OpenAIBackend:
    """Chat-completions client: one image + one prompt per request, bounded concurrency."""

    def __init__(self, model: str, base_url: str = "http://localhost:8000/v1", *,
                 api_key: str | None = None, api_key_env: str | None = None,
                 concurrency: int = 4, timeout: float = 60.0, max_retries: int = 4,
                 backoff: float = 0.5, max_backoff: float = 30.0, logprobs: bool = True,
                 top_logprobs: int = 5, max_tokens: int = 128, temperature: float = 0.0,
                 image_format: str = "JPEG", extra_body: dict[str, Any] | None = None,
                 max_consecutive_failures: int = 3):
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_consecutive_failures < 1:
            raise ValueError("max_consecutive_failures must be >= 1")
        if not (timeout > 0) or not (max_retries >= 0):
            raise ValueError("timeout must be > 0 and max_retries >= 0")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.logprobs = bool(logprobs)
        self.top_logprobs = int(top_logprobs)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.image_format = image_format
        self.extra_body = dict(extra_body or {})
        self._key = resolve_api_key(api_key, api_key_env)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pause_until = 0.0
        # Connection errors/timeouts in a row, over all workers: a dead or hanging endpoint
        # fails the run after a few seconds instead of ~2 s per label (issue 9).
        self.max_consecutive_failures = int(max_consecutive_failures)
        self._consecutive_failures = 0
        self.stats = {"requests": 0, "retries": 0, "rate_limited": 0, "timeouts": 0, "errors": 0}

    # -- identity (no secrets) -------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return f"openai:{self.base_url}|{self.model}"

    def describe(self) -> dict[str, Any]:
        return {"backend": "openai", "base_url": self.base_url, "model": self.model,
                "concurrency": self.concurrency, "timeout": self.timeout,
                "max_retries": self.max_retries, "logprobs": self.logprobs,
                "max_tokens": self.max_tokens, "temperature": self.temperature,
                "api_key_set": self._key is not None}

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r}, concurrency={self.concurrency})"

    # -- streaming -------------------------------------------------------------------------
    def stream(self, requests_: Iterable[tuple[Hashable, VLMRequest]]
               ) -> Iterator[tuple[Hashable, VLMResponse]]:
        """Answer requests with at most ``concurrency`` in flight; yield as they complete."""
        it = iter(requests_)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="vlm-http")
        pending: dict = {}
        # Keep a few rendered requests queued beyond the in-flight ones so workers never idle.
        depth = self.concurrency * 2
        try:
            def fill():
                while len(pending) < depth:
                    item = next(it, _END)
                    if item is _END:
                        return
                    key, req = item
                    pending[pool.submit(self.call, req)] = key

            fill()
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for f in done:
                    key = pending.pop(f)
                    yield key, f.result()
                fill()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- one request -----------------------------------------------------------------------
    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def _headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self._key:
            h["Authorization"] = f"Bearer {self._key}"
        return h

    def _payload(self, req: VLMRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": encode_image(req.image, self.image_format)}},
                {"type": "text", "text": req.prompt},
            ]}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = self.top_logprobs
        body.update(self.extra_body)
        return body

    def _redact(self, text) -> str:
        return redact(text, [self._key] if self._key else [])

    def _no_answer(self, what: str) -> None:
        """Count a request that got no HTTP answer; raise once there were too many in a row."""
        with self._lock:
            self._consecutive_failures += 1
            n = self._consecutive_failures
        if n >= self.max_consecutive_failures:
            raise VLMEndpointDown(self._redact(
                f"{self.base_url} gave no answer to {n} requests in a row (last: {what}); "
                "is the server running and reachable? Stopping before any result is written."))

    def _answered(self) -> None:
        with self._lock:
            self._consecutive_failures = 0

    def _wait_for_pause(self) -> None:
        with self._lock:
            delay = self._pause_until - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def _delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.max_backoff)
            except ValueError:
                pass
        base = min(self.backoff * (2 ** attempt), self.max_backoff)
        return base * (0.5 + random.random() / 2)  # jitter de-synchronises the workers

    def call(self, req: VLMRequest) -> VLMResponse:
        """One chat completion with retries; fatal configuration errors raise VLMBackendError."""
        body = self._payload(req)
        last_error = "no attempt made"
        attempt = 0
        while attempt <= self.max_retries:
            self._wait_for_pause()
            with self._lock:
                self.stats["requests"] += 1
            retry_after = None
            try:
                r = self._session().post(self.url, json=body, headers=self._headers(),
                                         timeout=(min(10.0, self.timeout), self.timeout))
            except requests.Timeout:
                last_error = f"timed out after {self.timeout:g}s"
                with self._lock:
                    self.stats["timeouts"] += 1
                self._no_answer(last_error)
            except requests.ConnectionError as e:
                last_error = f"connection error: {type(e).__name__}"
                self._no_answer(last_error)
            except (requests.RequestException, ValueError) as e:
                # e.g. InvalidHeader / InvalidURL: their messages may quote the header (the key)
                raise VLMBackendError(self._redact(f"request to {self.base_url} failed: "
                                                   f"{type(e).__name__}: {e}")) from None
            else:
                self._answered()
                code = r.status_code
                if code == 200:
                    try:
                        return self._parse_response(r.json())
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        last_error = f"malformed response: {type(e).__name__}"
                elif code in (401, 403):
                    raise VLMBackendError(
                        f"{self.base_url} rejected the request with HTTP {code}: check the API key "
                        "(FiftyOne secret LABEL_GRADER_VLM_API_KEY / OPENAI_API_KEY or api_key_env)")
                elif code == 404:
                    raise VLMBackendError(
                        f"HTTP 404 from {self.url}: check base_url (it should end in /v1) and "
                        f"that model {self.model!r} is served there")
                elif code in (400, 422) and "logprobs" in body:
                    # Some servers reject logprobs; fall back to text confidence for good.
                    log.info("endpoint rejected logprobs (HTTP %d); retrying without them", code)
                    self.logprobs = False
                    body.pop("logprobs", None)
                    body.pop("top_logprobs", None)
                    continue  # not counted as a retry
                elif code == 429 or code >= 500:
                    last_error = f"HTTP {code}"
                    retry_after = r.headers.get("Retry-After")
                    if code == 429:
                        with self._lock:
                            self.stats["rate_limited"] += 1
                else:
                    with self._lock:
                        self.stats["errors"] += 1
                    return VLMResponse(None, None, self._redact(f"HTTP {code}: {r.text[:200]}"))
            if attempt == self.max_retries:
                break
            delay = self._delay(attempt, retry_after)
            if retry_after:
                with self._lock:
                    self._pause_until = max(self._pause_until, time.monotonic() + delay)
            with self._lock:
                self.stats["retries"] += 1
            log.info("VLM request failed (%s); retry %d/%d in %.2fs", last_error, attempt + 1,
                     self.max_retries, delay)
            if not retry_after:
                time.sleep(delay)
            attempt += 1
        with self._lock:
            self.stats["errors"] += 1
        last_error = self._redact(last_error)
        log.warning("VLM request gave up after %d attempts: %s", attempt + 1, last_error)
        return VLMResponse(None, None, last_error)

    @staticmethod
    def _parse_response(data: dict[str, Any]) -> VLMResponse:
        choice = data["choices"][0]
        content = choice["message"].get("content")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        yes_prob = None
        lp = (choice.get("logprobs") or {}).get("content") or []
        if lp:
            step = answer_step([t.get("token", "") for t in lp])
            if step is not None:
                top = {t["token"]: t["logprob"] for t in lp[step].get("top_logprobs") or []}
                top.setdefault(lp[step]["token"], lp[step]["logprob"])
                yes_prob = yes_probability(top)
        return VLMResponse(content or "", yes_prob, None)
