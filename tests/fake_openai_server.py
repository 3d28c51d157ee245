"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benches.

It answers from a rule (``reply``: prompt text -> answer text), optionally with token
logprobs, and can be scripted to fail: a queue of per-request overrides (HTTP status, delay,
Retry-After). It records what it saw (Authorization headers, max concurrency, decoded image
sizes) so tests can assert on the client's behaviour. Bound to loopback only; the serving
thread stops on :meth:`close`.
"""
from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from PIL import Image


@dataclass
class Override:
    """What the server does for one request instead of answering normally."""

    status: int = 200
    delay: float = 0.0
    retry_after: str | None = None
    body: str | None = None


def default_reply(prompt: str) -> str:
    """"yes" for prompts about a cat, "no - ..." for anything else."""
    if '"cat"' in prompt:
        return "yes"
    return "No - the object in the box is not what the label says."


@dataclass
class ServerState:
    reply: Callable[[str], str] = default_reply
    logprobs: bool = True
    answer_prob: float = 0.8     # probability reported for the answer's first token
    delay: float = 0.0           # every request sleeps this long (a slow model)
    required_key: str | None = None
    reject_logprobs: bool = False
    overrides: deque = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    max_in_flight: int = 0
    requests: int = 0
    auth_headers: list = field(default_factory=list)
    image_sizes: list = field(default_factory=list)
    prompts: list = field(default_factory=list)
    models: list = field(default_factory=list)


def _logprobs_block(text: str, p_first: float) -> dict:
    words = text.split(" ")
    first = words[0]
    alt = "No" if first.lower().startswith("yes") else "Yes"
    content = [{"token": first, "logprob": math.log(max(p_first, 1e-9)),
                "top_logprobs": [{"token": first, "logprob": math.log(max(p_first, 1e-9))},
                                 {"token": alt, "logprob": math.log(max(1 - p_first, 1e-9))}]}]
    for w in words[1:]:
        content.append({"token": " " + w, "logprob": -0.1, "top_logprobs": []})
    return {"content": content}


def make_handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add
        # ~40 ms to every keep-alive reply and swamp what the benchmark measures.
        disable_nagle_algorithm = True

        def log_message(self, *args):  # keep test output quiet
            pass

        def _send(self, status: int, payload, headers: dict | None = None) -> None:
            body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to deliver

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length", 0))
            data = json.loads(self.rfile.read(length) or b"{}")
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
                state.requests += 1
                state.auth_headers.append(self.headers.get("Authorization"))
                ov = state.overrides.popleft() if state.overrides else None
            try:
                self._handle(data, ov)
            finally:
                with state.lock:
                    state.in_flight -= 1

        def _handle(self, data: dict, ov: Override | None) -> None:
            if not self.path.endswith("/chat/completions"):
                return self._send(404, {"error": {"message": "not found"}})
            if state.required_key is not None and \
                    self.headers.get("Authorization") != f"Bearer {state.required_key}":
                return self._send(401, {"error": {"message": "invalid api key"}})
            delay = state.delay + (ov.delay if ov else 0.0)
            if delay:
                time.sleep(delay)
            if ov is not None and ov.status != 200:
                headers = {"Retry-After": ov.retry_after} if ov.retry_after else None
                return self._send(ov.status, (ov.body or json.dumps({"error": {"message": "x"}})).encode(),
                                  headers)
            if state.reject_logprobs and data.get("logprobs"):
                return self._send(400, {"error": {"message": "logprobs not supported"}})
            prompt, image = "", None
            for part in data["messages"][-1]["content"]:
                if part["type"] == "text":
                    prompt += part["text"]
                elif part["type"] == "image_url":
                    url = part["image_url"]["url"]
                    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            with state.lock:
                state.prompts.append(prompt)
                state.models.append(data.get("model"))
                state.image_sizes.append(image.size if image is not None else None)
            text = (ov.body if ov is not None and ov.body is not None else state.reply(prompt))
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": "stop"}
            if data.get("logprobs") and state.logprobs:
                choice["logprobs"] = _logprobs_block(text, state.answer_prob)
            self._send(200, {"id": "cmpl-test", "object": "chat.completion",
                             "model": data.get("model"), "choices": [choice]})

    return Handler


class FakeOpenAIServer:
    """Context manager: ``with FakeOpenAIServer() as srv: srv.base_url``."""

    def __init__(self, **state_kwargs):
        self.state = ServerState(**state_kwargs)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "FakeOpenAIServer":
        self.thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __exit__(self, *exc) -> None:
        self.close()
