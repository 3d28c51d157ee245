"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import logging
import time

import numpy as np
import pytest
from PIL import Image

from fake_openai_server import FakeOpenAIServer, Override
from grader.judges.vlm.backends import VLMBackendError, VLMRequest
from grader.judges.vlm.openai_http import OpenAIBackend

KEY = "sk-test-9f8e7d6c5b4a"


def _req(prompt='Is the label "cat" correct?'):
    arr = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    return VLMRequest(Image.fromarray(arr), prompt)


def _backend(srv, **kw):
    kw.setdefault("backoff", 0.01)
    return OpenAIBackend("fake-vlm", base_url=srv.base_url, **kw)


def test_answers_with_logprobs_and_image_sent():
    with FakeOpenAIServer(answer_prob=0.85) as srv:
        b = _backend(srv)
        out = dict(b.stream([(0, _req()), (1, _req('Is the label "dog" correct?'))]))
    assert out[0].text == "yes" and out[0].yes_prob == pytest.approx(0.85)
    assert out[1].text.startswith("No") and out[1].yes_prob == pytest.approx(0.15)
    assert srv.state.image_sizes == [(50, 40), (50, 40)] and srv.state.models == ["fake-vlm"] * 2


def test_without_logprobs_and_when_server_rejects_them():
    with FakeOpenAIServer(logprobs=False) as srv:
        r = _backend(srv).call(_req())
    assert r.text == "yes" and r.yes_prob is None
    with FakeOpenAIServer(reject_logprobs=True) as srv:
        b = _backend(srv)
        r1, r2 = b.call(_req()), b.call(_req())
    assert r1.text == r2.text == "yes" and r1.yes_prob is None and r1.error is None
    # one 400 for the first request only; afterwards logprobs are no longer requested
    assert srv.state.requests == 3 and b.logprobs is False


def test_concurrency_is_bounded_and_used():
    with FakeOpenAIServer(delay=0.15) as srv:
        b = _backend(srv, concurrency=3)
        t0 = time.perf_counter()
        out = list(b.stream((i, _req()) for i in range(12)))
        dt = time.perf_counter() - t0
    assert sorted(k for k, _ in out) == list(range(12))
    assert srv.state.max_in_flight == 3
    assert dt < 12 * 0.15 * 0.6  # overlapped, not serial


def test_stream_pulls_requests_lazily():
    pulled = []

    def gen():
        for i in range(40):
            pulled.append(i)
            yield i, _req()

    with FakeOpenAIServer(delay=0.05) as srv:
        it = _backend(srv, concurrency=2).stream(gen())
        next(it)
        assert len(pulled) <= 2 * 2 + 1  # the render stream is not drained up front
        rest = list(it)
    assert len(rest) == 39


def test_retries_on_429_and_5xx_then_succeeds():
    with FakeOpenAIServer() as srv:
        srv.state.overrides.extend([Override(429, retry_after="0.05"), Override(500), Override(503)])
        b = _backend(srv)
        t0 = time.perf_counter()
        r = b.call(_req())
        dt = time.perf_counter() - t0
    assert r.text == "yes" and r.error is None
    assert srv.state.requests == 4
    assert b.stats["retries"] == 3 and b.stats["rate_limited"] == 1
    assert dt >= 0.05  # Retry-After was honoured


def test_gives_up_after_max_retries():
    with FakeOpenAIServer() as srv:
        srv.state.overrides.extend([Override(500)] * 5)
        r = _backend(srv, max_retries=2).call(_req())
    assert r.text is None and r.error == "HTTP 500" and srv.state.requests == 3


def test_timeout_then_retry():
    with FakeOpenAIServer() as srv:
        srv.state.overrides.append(Override(delay=1.0))
        b = _backend(srv, timeout=0.3, max_retries=1)
        r = b.call(_req())
    assert r.text == "yes" and b.stats["timeouts"] == 1
    with FakeOpenAIServer(delay=0.6) as srv:
        r = _backend(srv, timeout=0.2, max_retries=1).call(_req())
    assert r.text is None and "timed out" in r.error


def test_client_error_is_not_retried():
    with FakeOpenAIServer() as srv:
        srv.state.overrides.append(Override(413, body='{"error": "too large"}'))
        r = _backend(srv).call(_req())
    assert r.error.startswith("HTTP 413") and srv.state.requests == 1


def test_key_in_header_never_in_logs_or_repr(caplog, monkeypatch):
    monkeypatch.setenv("MY_VLM_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(required_key=KEY) as srv:
        srv.state.overrides.extend([Override(429, retry_after="0"), Override(500)])
        b = _backend(srv, api_key_env="MY_VLM_KEY")
        out = list(b.stream((i, _req()) for i in range(3)))
    assert all(r.text == "yes" for _, r in out)
    assert srv.state.auth_headers and all(h == f"Bearer {KEY}" for h in srv.state.auth_headers)
    assert "retry" in caplog.text.lower()  # the retries were logged...
    assert KEY not in caplog.text          # ...without the key
    assert KEY not in repr(b) and KEY not in str(b.describe()) and KEY not in b.model_id


def test_rejected_key_is_a_clear_error_without_the_key():
    with FakeOpenAIServer(required_key="right-key") as srv:
        with pytest.raises(VLMBackendError, match="401") as e:
            _backend(srv, api_key=KEY).call(_req())
    assert KEY not in str(e.value)


def test_missing_env_var_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("NO_SUCH_VLM_KEY", raising=False)
    with pytest.raises(VLMBackendError, match="NO_SUCH_VLM_KEY"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", api_key_env="NO_SUCH_VLM_KEY")


def test_wrong_path_is_a_clear_error():
    with FakeOpenAIServer() as srv:
        b = OpenAIBackend("m", base_url=srv.base_url.replace("/v1", "/nope/x"), backoff=0.01)
        b.url = b.base_url + "/wrong"
        with pytest.raises(VLMBackendError, match="404"):
            b.call(_req())
