"""``decisioning serve``: the BentoML decision service over one workspace."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import click

from decisioning.options import progress, workspace_option

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@click.command("serve")
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True, help="TCP port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: every one).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="YAML file with ServingConfig fields (auth token, A/B split, policy, refresh interval, seed).")
@workspace_option
def command(port, host, config_path, workspace):
    """Run the decision service (BentoML) on the workspace's feature store, champion models,
    policy and decision log, until SIGTERM or Ctrl-C.

    \b
    POST /decide         one customer (flat JSON body, see /docs)
    POST /decide/batch   a campaign audience: {"customer_ids": [...]}
    POST /outcome        one outcome, or {"outcomes": [...]}; idempotent by event_id
    POST /learn          learn from the joined decision log now
    POST /policy/promote {"candidate": "thompson.candidate"}: serve a fitted policy file of
                         <workspace>/policies/ from now on (admin; needs the token if one is set)
    GET  /healthz /readyz /livez /metrics, /docs (OpenAPI)

    Needs profiles, the materialised feature store and registered champions (a missing part is
    answered by a flagged fallback, never an error). The first start without a fitted policy
    warm-starts one from the logged history and saves it under <workspace>/policies/.
    The service runs `workers` processes (config, default 2; one per core), which share the
    workspace: a policy learned or promoted through any of them is served by all.
    """
    from core.errors import WorkspaceError
    from serving.config import CONFIG_ENV, load_serving_config

    if not workspace.root.is_dir():
        raise WorkspaceError(f"workspace {workspace.root} does not exist: run `decisioning simulate` and the "
                             "following steps first")
    config = load_serving_config(config_path, environ={})  # fail here, with the file's name, if invalid
    env = dict(os.environ)
    env["DECISIONING_HOME"] = str(workspace.root)
    if config_path is not None:
        env[CONFIG_ENV] = str(config_path.resolve())
    else:
        env.pop(CONFIG_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env["DECISIONING_SERVER_ID"] = uuid.uuid4().hex  # shared by this run's worker processes (serving.learning)
    # BentoML keeps the workers' Prometheus files in <BENTOML_HOME>/prometheus_multiproc_dir and
    # empties that folder when a server starts: a second server on the machine (a test, a bench)
    # would wipe this one's counters. A private home per run keeps /metrics whole (the service
    # uses no BentoML model store).
    sweep_stale_homes(Path(tempfile.gettempdir()))
    bentoml_home = tempfile.mkdtemp(prefix=HOME_PREFIX)
    (Path(bentoml_home) / OWNER_FILE).write_text(str(os.getpid()))
    env["BENTOML_HOME"] = bentoml_home
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:DecisionService", "--host", host,
           "--port", str(port), "--working-dir", str(PROJECT_ROOT)]
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    progress(f"starting the decision service on {workspace.root} "
             f"({config.workers} worker process{'es' if config.workers > 1 else ''}, "
             f"auth {'on' if config.auth_token else 'off'}, policy {config.policy}"
             f"{', A/B vs ' + config.ab_test.challenger if config.ab_test else ''})")
    child = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=sys.stderr)  # stdout: only the URL

    def stop(signum, frame):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(url, err=False)
    sys.stdout.flush()
    ready = _wait_ready(url, child)
    if ready:
        progress(f"ready: {url} (OpenAPI at {url}/docs); stop with Ctrl-C or SIGTERM")
    code = child.wait()
    shutil.rmtree(bentoml_home, ignore_errors=True)
    progress("decision service stopped")
    if code not in (0, -signal.SIGTERM, 143) and code is not None:
        sys.exit(code)


HOME_PREFIX = "decisioning-bentoml-"
OWNER_FILE = "owner.pid"


def sweep_stale_homes(tmp: Path) -> list[Path]:
    """Remove the private BentoML homes of `decisioning serve` runs that are gone (killed with
    -9, so their own clean-up never ran): those whose owner process no longer exists. A home
    without an owner file is left alone (an older version's, or one being created). Returns
    what was removed."""
    removed = []
    for home in tmp.glob(f"{HOME_PREFIX}*"):
        try:
            pid = int((home / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or another user's: not ours to judge)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(home, ignore_errors=True)
        removed.append(home)
    return removed


def _wait_ready(url: str, child: subprocess.Popen, timeout: float = 300.0) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False
