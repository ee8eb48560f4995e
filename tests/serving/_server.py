"""Start, wait for and kill a real `decisioning serve` process (shared by the real-server tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(proc: subprocess.Popen, wait: bool = False) -> None:
    """kill -9 the server and every process it started (BentoML's workers leave its process group)."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    if wait:
        proc.wait(timeout=30)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    """Until /readyz answers 200 (readiness of the HTTP layer; the first decide confirms the engine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError("server not ready")
