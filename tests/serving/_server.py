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


@contextlib.contextmanager
def serve_copy(prepared, folder, config: str, learn_seconds: str):
    """A real `decisioning serve` over a private copy of the workspace ``prepared`` (without its
    decision log) in ``folder``, with serving config ``config`` (YAML text) and
    $DECISIONING_LEARN_SECONDS ``learn_seconds``; yields (workspace, url, process), kills it after."""
    import shutil
    import sys

    from core.workspace import Workspace

    dst = folder / "ws"
    shutil.copytree(prepared.root, dst, ignore=shutil.ignore_patterns("decisions"))
    ws = Workspace(dst)
    path = dst / "serving.yaml"
    path.write_text(config)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, DECISIONING_HOME=str(ws.root), DECISIONING_LEARN_SECONDS=learn_seconds)
    env.pop("DECISIONING_SERVING_CONFIG", None)
    cmd = [sys.executable, "-m", "decisioning.cli", "serve", "--port", str(port), "--config", str(path),
           "--workspace", str(ws.root)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_ready(url, proc)
        yield ws, url, proc
    finally:
        kill_tree(proc, wait=True)
