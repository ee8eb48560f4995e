"""``decisioning demo``: the whole closed loop, from nothing, on the embedded defaults, over HTTP.

    simulate -> profiles -> features apply/materialize -> train all -> champions -> serve (subprocess
    on a free loopback port, with a fresh bearer token) -> journey --url (decide, outcome, learn over
    HTTP) -> drift, and meanwhile: retrain (a challenger of the champion's class refitted in batch on
    the campaign history + the served decisions of the journey's first half) -> ope of that fitted
    challenger on the served decisions of the second half (IPS/SNIPS/DR with intervals, and the
    paired DR lift over the champion's logged value) -> promote it through the RUNNING service
    (POST /policy/promote) only if the lift's interval is above 0 -> stop the service -> summary
    (served policy version before and after) + HTML report

No leakage: the challenger never learns from a decision it is judged on (it learns from decisions
decided before the split whose outcomes had matured by then; it is judged on those decided from the
split on), and the OPE's reward model is cross-fitted on the judged decisions.

Each command step runs the public subcommand in its own process (exactly what a person would
type), with ``--json`` so the demo can summarise the figures; progress of every step streams to
stderr. The service is stopped in every case (error, Ctrl-C). Steps whose subcommand does not
exist in this version are reported as skipped. Every figure of the summary comes from a step's
JSON (nothing is hard-coded).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click

from core.errors import DecisioningError
from decisioning.options import emit_json, json_option, progress, workspace_option

#: the challenger policy: the champion's own class (the service's default policy), refitted in
#: batch on the campaign history plus the served log's first journey days, judged on the last days
CHALLENGER = "thompson"
#: history sends the challenger's batch refit reads (the service's warm start reads 30,000)
CHALLENGER_HISTORY = 60_000


@dataclass
class Step:
    title: str
    argv: list[str]
    ok_codes: tuple[int, ...] = (0,)
    in_workspace: bool = True  # pass --workspace (ope reads any log file and has no workspace)
    fn: Callable[[Demo], dict] | None = None  # an in-process step (service control, promotion)
    group: str | None = None  # consecutive steps of one group run side by side
    after_fns: bool = False  # in a group: start once the group's in-process steps are done
    result: dict | None = None
    seconds: float = 0.0
    status: str = "pending"
    message: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.argv[0]


@dataclass
class Demo:
    workspace: object  # core.workspace.Workspace
    seed: int
    done: dict[str, dict] = field(default_factory=dict)
    service: subprocess.Popen | None = None
    url: str | None = None
    started: float = 0.0
    registry: threading.Thread | None = None
    token: str | None = None  # the service's bearer token (the demo sets one: /policy/promote is admin)

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def prepare_registry(self) -> None:
        """Create the workspace's MLflow store in the background (imports and migrations take
        tens of seconds) while the first steps run, so the service and training open an existing one."""
        def create() -> None:
            from training.tracking import Tracker

            with contextlib.suppress(Exception):  # training reports a broken store itself
                Tracker(self.workspace)

        self.registry = threading.Thread(target=create, name="mlflow-store", daemon=True)
        self.registry.start()


def _available(command: str) -> bool:
    from decisioning.cli import _available as available

    return command in available()


def _resolve(argv: list[str], done: dict[str, dict]) -> list[str]:
    """Fill ``{command.key}`` placeholders from the JSON of earlier steps."""
    out = []
    for a in argv:
        if a.startswith("{") and a.endswith("}"):
            command, key = a[1:-1].split(".", 1)
            value = done.get(command) or {}
            for part in key.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                raise DecisioningError(f"demo: step '{command}' did not report '{key}'")
            a = str(value)
        out.append(a)
    return out


def _run(step: Step, demo: Demo) -> None:
    _finish(step, demo, _start(step, demo))


def _run_group(steps: list[Step], demo: Demo) -> None:
    """Steps that only depend on earlier ones run side by side: the command steps in their own
    processes, the in-process steps meanwhile in this one."""
    handles = [(s, _start(s, demo)) for s in steps if s.fn is None and not s.after_fns]
    error: BaseException | None = None
    for s in steps:
        if s.fn is not None:
            try:
                _run(s, demo)
            except DecisioningError as exc:
                error = error or exc
    for s in steps:
        if s.fn is None and s.after_fns:
            if error is None:
                handles.append((s, _start(s, demo)))
            else:
                s.status, s.message = "skipped", f"an earlier step failed: {error}"
    ended: dict[int, float] = {}
    while len(ended) < len(handles):  # note when each one ends (its wall time), not when it is read
        for k, (_s, h) in enumerate(handles):
            if k not in ended and (h is None or h[0].poll() is not None):
                ended[k] = time.perf_counter()
        time.sleep(0.2)
    for k, (s, h) in enumerate(handles):
        try:
            _finish(s, demo, h, ended.get(k))
        except DecisioningError as exc:
            error = error or exc
    if error is not None:
        raise error


def _start(step: Step, demo: Demo):
    t0 = time.perf_counter()
    if step.fn is not None:
        progress(f"== {step.title}")
        try:
            step.result = step.fn(demo)
        except Exception:
            step.status = "failed"
            step.seconds = time.perf_counter() - t0
            raise
        step.seconds = time.perf_counter() - t0
        return None
    if not _available(step.argv[0]):
        step.status = "skipped"
        step.message = f"`decisioning {step.argv[0]}` does not exist in this version"
        progress(f"-- {step.title}: skipped ({step.message})")
        return None
    step.argv = _resolve(step.argv, demo.done)
    cmd = [sys.executable, "-m", "decisioning.cli", *step.argv]
    if step.in_workspace:
        cmd += ["--workspace", str(demo.workspace.root)]
    progress(f"== {step.title}: decisioning {' '.join(step.argv)}")
    # a file, not a pipe: a step in a group never blocks on a full pipe; _finish closes it
    out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
    env = dict(os.environ) | ({"DECISIONING_TOKEN": demo.token} if demo.token else {})
    return subprocess.Popen(cmd, stdout=out, stderr=None, text=True, env=env), out, t0


def _finish(step: Step, demo: Demo, handle, ended: float | None = None) -> None:
    if step.status in ("skipped", "failed"):
        return
    if step.fn is not None:
        step.status = "done"
        step.message = (step.result or {}).pop("message", "")
        demo.done[step.key] = step.result or {}
        progress(f"   {step.key} done in {step.seconds:.1f} s" + (f": {step.message}" if step.message else ""))
        return
    proc, out_file, t0 = handle
    code = proc.wait()
    step.seconds = (ended or time.perf_counter()) - t0
    out_file.seek(0)
    out = out_file.read().strip().splitlines()
    out_file.close()
    if out:
        try:
            step.result = json.loads(out[-1])
        except json.JSONDecodeError:
            step.message = out[-1][:300]
    if code not in step.ok_codes:
        step.status = "failed"
        raise DecisioningError(f"demo step '{step.title}' failed with exit code {code}")
    step.status = "done"
    if step.result is not None:
        demo.done[step.argv[0]] = step.result
    progress(f"   {step.key} done in {step.seconds:.1f} s")


# -- in-process steps ---------------------------------------------------------------------------

def _champions(demo: Demo) -> dict:
    """Each model's challenger becomes champion if there is none, else only if it wins."""
    from training.registry import promote

    out = {}
    for model in ("propensity", "churn", "offer", "send-time"):
        try:
            res = promote(demo.workspace, model, progress=progress)
            out[model] = {"promoted": res["promoted"], "reason": res["reason"]}
        except DecisioningError as exc:  # a model that could not be trained: the service falls back
            out[model] = {"promoted": False, "reason": str(exc)}
        progress(f"   {model}: {'PROMOTED' if out[model]['promoted'] else 'kept'} ({out[model]['reason']})")
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_service(demo: Demo) -> dict:
    """Start ``decisioning serve`` on a free loopback port WITHOUT waiting: it starts up (imports,
    feature store, policy warm start) while the models train; it picks up the champions from the
    registry when they are set (polled every few seconds)."""
    if demo.registry is not None:  # the MLflow store exists before two processes open it
        demo.registry.join()
    moved = _set_aside_service_state(demo.workspace)
    port = _free_port()
    config = demo.workspace.root / "serving-demo.yaml"
    import secrets

    demo.token = secrets.token_hex(16)
    config.write_text("# written by `decisioning demo`: poll the registry often (champions are set after start);\n"
                      "# a fresh bearer token per demo (the admin endpoint /policy/promote needs it)\n"
                      f"refresh_seconds: 3\nauth_token: {demo.token}\n")
    config.chmod(0o600)
    env = dict(os.environ)
    env["DECISIONING_LEARN_SECONDS"] = "0"  # the journey drives the clock: it calls /learn itself
    env.pop("DECISIONING_SERVING_CONFIG", None)
    cmd = [sys.executable, "-m", "decisioning.cli", "serve", "--port", str(port), "--config", str(config),
           "--workspace", str(demo.workspace.root)]
    demo.workspace.reports.mkdir(parents=True, exist_ok=True)
    log = demo.workspace.reports / "serve.log"
    with log.open("ab") as out:  # the service's own (access) log; the demo's progress stays readable
        demo.service = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
    demo.url = f"http://127.0.0.1:{port}"
    demo.started = time.perf_counter()
    return {"url": demo.url, "pid": demo.service.pid, "log": str(log), "previous_state": moved,
            "message": f"starting on {demo.url} (pid {demo.service.pid}, log {log})"
                       + (f"; the previous run's service state was moved to {moved}" if moved else "")}


def _set_aside_service_state(workspace) -> str | None:
    """A new world makes the service's state of an earlier demo stale (its decision log would cap
    the new journey's sends, its policies learned another world): move it under
    ``<workspace>/previous/<time>/``. Returns that folder, or None when there was nothing."""
    import shutil

    parts = [p for p in (*workspace.decisions.glob("decisions.sqlite*"), *workspace.decisions.glob("budget.sqlite*"),
                         workspace.root / "policies") if p.exists()]
    if not parts:
        return None
    dst = workspace.root / "previous" / time.strftime("%Y%m%dT%H%M%S")
    dst.mkdir(parents=True, exist_ok=True)
    for p in parts:
        shutil.move(str(p), str(dst / p.name))
    return str(dst)


def _wait_service(demo: Demo) -> dict:
    """Wait for /readyz and for the champions to be loaded (every decision would otherwise be the
    safe rule's)."""
    import httpx

    if demo.service is None:
        raise DecisioningError("demo: the decision service was not started")
    deadline = time.monotonic() + 300
    last, status = 0.0, None
    while True:
        if demo.service.poll() is not None:
            raise DecisioningError(f"the decision service exited with code {demo.service.returncode} while starting")
        try:
            if httpx.get(f"{demo.url}/readyz", timeout=2).status_code == 200:
                status = httpx.post(f"{demo.url}/status", json={}, timeout=120, headers=demo.headers).json()
                if not status.get("models_missing"):
                    break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise DecisioningError(f"the decision service at {demo.url} was not ready with its champions after "
                                   f"300 s (last status: {status})")
        if time.perf_counter() - last > 10:
            progress(f"   waiting for {demo.url} ({'models ' + str(status.get('models_missing')) if status else 'readyz'})")
            last = time.perf_counter()
        time.sleep(0.5)
    return {"url": demo.url, "ready_after_launch_seconds": round(time.perf_counter() - demo.started, 1),
            "status": status, "message": f"{demo.url} ready, models {status.get('models')}, "
                                         f"policies {status.get('policies')}"}


def _stop_service(demo: Demo) -> dict:
    """SIGTERM the service (``decisioning serve`` forwards it to BentoML), then kill what is left."""
    proc = demo.service
    if proc is None:
        return {"stopped": False}
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            if p.is_running():
                p.kill()
    demo.service = None
    return {"stopped": True, "exit_code": proc.returncode}


def _journey_end(demo: Demo):
    import pandas as pd

    j = demo.done.get("journey") or {}
    if j.get("journey_end"):
        return pd.Timestamp(j["journey_end"])
    days = j.get("days")
    ends = [d for d in (j.get("policy") or {}).get("value_per_day", [])]
    if days is None or not ends:
        raise DecisioningError("demo: the journey reported no days")
    from world import World

    start = pd.Timestamp(World.load(demo.workspace).history_end)
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return start + pd.Timedelta(days=int(days))


def _journey_split(demo: Demo):
    """(journey start, split, journey end): the challenger learns from the served decisions before
    the split, the off-policy evaluation judges it on the decisions from the split on."""
    import pandas as pd

    end = _journey_end(demo)
    days = int((demo.done.get("journey") or {}).get("days") or 0)
    if days < 2:
        raise DecisioningError("demo: the journey needs at least 2 days to refit on some and evaluate on others")
    start = end - pd.Timedelta(days=days)
    return start, start + pd.Timedelta(days=days // 2), end


def _fit_challenger(demo: Demo, until, as_of, name: str):
    """A fresh challenger of the champion's class: warm-started on the campaign history, then
    updated with the served log's decisions decided before ``until`` (None: all) that had matured
    by ``as_of``; saved as ``<policies>/<name>``. Returns (policy, path, history_rows, log_rows, seconds)."""
    from serving.config import load_serving_config
    from serving.learning import refit_policy
    from serving.policy_state import policy_dir, save_policy, warm_start

    log_path = (demo.done.get("journey") or {}).get("log")
    if not log_path:
        raise DecisioningError("demo: the journey did not report its decision log")
    cfg = load_serving_config(demo.workspace.root / "serving-demo.yaml", environ={})
    t0 = time.perf_counter()
    initial = warm_start(demo.workspace, CHALLENGER, cfg.policy_params, cfg.policy_layer, demo.seed,
                         max_sends=CHALLENGER_HISTORY)
    history_rows = int(getattr(initial, "n_seen_", 0))
    t1 = time.perf_counter()
    policy, n = refit_policy(Path(log_path), CHALLENGER, params=cfg.policy_params, as_of=as_of.to_pydatetime(),
                             until=None if until is None else until.to_pydatetime(), seed=demo.seed,
                             layer=cfg.policy_layer, initial=initial)
    path = policy_dir(demo.workspace) / name
    save_policy(policy, path)
    return policy, path, history_rows, n, (round(t1 - t0, 1), round(time.perf_counter() - t1, 1))


def _refit(demo: Demo) -> dict:
    """Retrain from the logged outcomes, in batch: a fresh challenger of the champion's class
    fitted on the campaign history (the journey's warm start, over more sends than the service's)
    and then on the served log's decisions of the journey's first half that had matured by the
    split. It never sees a decision of the second half, on which it is judged."""
    from serving.engine import _policy_version

    _start, split, _end = _journey_split(demo)
    policy, path, history_rows, n, (s_hist, s_log) = _fit_challenger(
        demo, split, split, f"{CHALLENGER}.candidate.pkl")
    return {"policy": CHALLENGER, "history_rows": history_rows, "log_rows": n, "split": split.isoformat(),
            "version": _policy_version(policy), "path": str(path), "candidate": path.name,
            "seconds_history": s_hist, "seconds_log": s_log,
            "message": f"{CHALLENGER} refitted on {history_rows:,} campaign-history rows + {n:,} served decisions "
                       f"decided and matured before {split.isoformat()} (evaluated on the decisions from then on)"}


def _served_policy(demo: Demo) -> dict:
    import httpx

    status = httpx.post(f"{demo.url}/status", json={}, timeout=60, headers=demo.headers).json()
    return (status.get("policies") or {}).get("champion") or {}


#: the least effective sample size, as a share of the evaluated decisions, the gate trusts
MIN_ESS_SHARE = 0.01


def gate(ope: dict) -> tuple[bool, str]:
    """The promotion gate on the ``decisioning ope --json`` result: promote only on a clear win,
    i.e. the paired DR lift over the champion's logged value on the same decisions has its whole
    interval above 0, with enough overlap (effective sample size >= 1% of the decisions: below
    that the challenger mostly takes actions the champion seldom took and the estimate rests on a
    few heavily weighted rows and on the reward model's extrapolation). Returns (promote, why)."""
    lift, dr, logged = ope.get("lift_over_logged"), ope.get("dr"), ope.get("logged_value")
    if not lift or not dr or logged is None:
        return False, f"no doubly-robust estimate ({ope.get('dr_reason', 'ope did not run')})"
    n, ess = int(ope.get("n") or 0), ope.get("ess")
    head = (f"DR {dr['value']:.4f} vs the champion's logged {logged:.4f} on the same {n:,} "
            f"decisions: lift {lift['value']:+.4f} [{lift['ci_low']:+.4f}, {lift['ci_high']:+.4f}]")
    if ess is not None:
        head += f", effective sample size {ess:,.0f} ({ess / max(n, 1):.1%})"
    if ess is not None and ess < MIN_ESS_SHARE * n:
        return False, head + (f": below {MIN_ESS_SHARE:.0%} of the decisions, too little overlap with the champion "
                              "to trust the estimate; the champion stays")
    if lift["ci_low"] > 0:
        return True, head + ": the lift's interval is above 0"
    return False, head + (": the lift's interval includes 0" if lift["ci_high"] >= 0 else
                          ": the lift's interval is below 0") + ", not a clear win; the champion stays"


def _promotion(demo: Demo) -> dict:
    """Promote the challenger through the RUNNING service (``POST /policy/promote``) only if
    :func:`gate` says it clearly wins; the served policy version is read before and after."""
    import httpx

    o = demo.done.get("ope") or {}
    out = {"policy": CHALLENGER, "logged_value": o.get("logged_value"), "dr": o.get("dr"),
           "lift": o.get("lift_over_logged"), "n_evaluated": o.get("n")}
    if demo.service is None or demo.service.poll() is not None:
        raise DecisioningError("demo: the decision service is not running for the promotion")
    out["served_before"] = _served_policy(demo).get("version")
    promote, why = gate(o)
    out |= {"promoted": promote, "reason": why}
    if promote:
        # the gate judged the refit procedure on held-out days; what goes live is the same
        # procedure refitted on every matured decision, so the promoted policy has learned from the
        # days it was judged on too (the service's learner counts them as learned already)
        refit = demo.done.get("refit") or {}
        candidate = refit.get("candidate")
        if refit.get("split"):  # the demo's own refit step ran: refit on everything for deployment
            _start, _split, end = _journey_split(demo)
            _final, path, _h, n_all, _s = _fit_challenger(demo, None, end, f"{CHALLENGER}.final.pkl")
            out["deployed_refit"] = {"log_rows": n_all, "candidate": path.name}
            candidate = path.name
        r = httpx.post(f"{demo.url}/policy/promote", json={"candidate": candidate}, timeout=120,
                       headers=demo.headers)
        if r.status_code != 200:
            raise DecisioningError(f"demo: POST /policy/promote answered {r.status_code}: {r.text[:300]}")
        out["promote_response"] = r.json()
        out["reason"] += "; served through POST /policy/promote"
    out["served_after"] = _served_policy(demo).get("version")
    out["message"] = (("PROMOTED: " if out["promoted"] else "NOT PROMOTED: ") + out["reason"]
                      + f" (served policy {out['served_before']} -> {out['served_after']})")
    return out


def _steps(customers: int, days: int, journey_days: int, seed: int, trials: int, ope_folds: int,
           ope_bootstrap: int) -> list[Step]:
    return [
        Step("simulate a customer world",
             ["simulate", "--customers", str(customers), "--days", str(days), "--seed", str(seed), "--json"]),
        Step("import sources and resolve identities", ["profiles", "--json"]),
        Step("apply the Feast feature repo", ["features", "apply", "--json"]),
        Step("materialise features to the online store", ["features", "materialize", "--json"]),
        Step("start the decision service (it starts up while the models train)", ["serve"], fn=_launch_service),
        Step("train and register the four models", ["train", "all", "--trials", str(trials), "--json"]),
        Step("champions: challenger -> champion (first run) or if it wins", ["champions"], fn=_champions),
        Step("wait for the decision service to serve the champions", ["ready"], fn=_wait_service),
        Step("run the simulated journey over HTTP",
             ["journey", "--url", "{serve.url}", "--days", str(journey_days), "--seed", str(seed), "--json"]),
        Step("check drift and policy health", ["drift", "--json"], ok_codes=(0, 1), group="after-journey"),
        Step(f"retrain: batch refit of a challenger ({CHALLENGER}) on history + the first journey days",
             ["refit"], fn=_refit, group="after-journey"),
        Step(f"evaluate the challenger ({CHALLENGER}) off-policy on the last journey days",
             ["ope", "--log", "{journey.log}", "--as-of", "{journey.journey_end}", "--since", "{refit.split}",
              "--target-file", "{refit.path}", "--folds", str(ope_folds), "--bootstrap", str(ope_bootstrap),
              "--seed", str(seed), "--json"],
             in_workspace=False, group="after-journey", after_fns=True),
        Step("promote the challenger in the running service only if it clearly wins", ["promotion"], fn=_promotion),
        Step("stop the decision service", ["stop"], fn=_stop_service),
    ]


def _fmt(v, spec=".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def _summary_lines(steps: list[Step]) -> list[str]:
    lines = []
    for s in steps:
        head = f"{s.title[:62]:62s} {s.status:8s} {s.seconds:7.1f} s"
        lines.append(head)
    by = {s.key: s.result for s in steps if s.result}
    if "profiles" in by and "precision" in by["profiles"]:
        p = by["profiles"]
        lines.append(f"identity resolution vs truth: precision {p['precision']:.4f}, recall {p['recall']:.4f}")
    if "train" in by:
        for name, m in by["train"].items():
            if isinstance(m, dict) and "auc" in m and "oracle_auc" in m:
                lines.append(f"model {name}: AUC {m['auc']:.3f} (oracle with the true probabilities {m['oracle_auc']:.3f})")
            elif isinstance(m, dict) and "gap_closed" in m:
                lines.append(f"model {name}: closes {m['gap_closed']:.0%} of the gap from baseline to oracle")
    if "journey" in by:
        j = by["journey"]
        parts = [f"{k} {j[k]['value']:.3f}" for k in ("policy", "rule", "random", "oracle", "no_send")
                 if isinstance(j.get(k), dict) and "value" in j[k]]
        if parts:
            lines.append("journey value per customer-day (policy over HTTP): " + ", ".join(parts))
        c = j.get("comparison") or {}
        if c.get("gap_closed") is not None:
            lines.append(f"policy / rule {_fmt(c.get('policy_over_rule'))}; gap rule->oracle closed "
                         f"{_fmt(c.get('gap_closed'), '.1%')}; guardrail violations {j.get('guardrail_violations')}")
        h = j.get("http")
        if h:
            lines.append(f"over HTTP: {h['requests']:,} requests ({h['retries']} retries), "
                         f"{_fmt(h.get('decisions_per_second'), ',.0f')} decisions/s in /decide/batch, "
                         f"{h['outcomes']['accepted']:,} outcomes accepted, policy learned from {h['learned']:,} "
                         f"decisions ({h.get('policy_version_first')} -> {h.get('policy_version_last')})")
    if "refit" in by:
        r = by["refit"]
        lines.append(f"challenger {r['policy']} ({r['version']}): batch refit on {r['history_rows']:,} history rows "
                     f"+ {r['log_rows']:,} served decisions before {r['split']}")
    if "ope" in by:
        o = by["ope"]
        parts = [f"{k.upper()} {o[k]['value']:.3f} [{o[k]['ci_low']:.3f}, {o[k]['ci_high']:.3f}]"
                 for k in ("ips", "snips", "dr") if isinstance(o.get(k), dict) and o[k].get("value") is not None]
        if parts:
            lift = o.get("lift_over_logged") or {}
            lines.append(f"challenger off-policy on {o.get('n', 0):,} served decisions from {o.get('decided_from')}: "
                         + ", ".join(parts) + f"; champion's logged value {_fmt(o.get('logged_value'))}"
                         + (f"; paired DR lift {lift['value']:+.3f} [{lift['ci_low']:+.3f}, {lift['ci_high']:+.3f}]"
                            if lift else ""))
    if "promotion" in by:
        p = by["promotion"]
        lines.append(("challenger PROMOTED: " if p["promoted"] else "challenger NOT PROMOTED: ") + p["reason"])
        lines.append(f"served champion policy: {p.get('served_before')} before, {p.get('served_after')} after")
    if "drift" in by:
        d = by["drift"]
        kinds = sorted({a.get("kind") for a in d.get("alarms", []) if isinstance(a, dict)})
        lines.append(f"drift: {'retraining due (' + ', '.join(kinds) + ')' if d.get('retrain_due') else 'no alarm'}"
                     f"; drifted features {(d.get('feature_drift') or {}).get('drifted', 'n/a')}")
    return lines


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(steps: list[Step]) -> list[tuple[str, str]]:
    """(caption, data URI) of the demo's plots; a plot whose data is missing is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {s.key: s.result for s in steps if s.result}
    out = []
    ran = [s for s in steps if s.status in ("done", "failed")]
    if ran:
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(ran) + 1))
        ax.barh([s.title[:50] for s in ran][::-1], [s.seconds for s in ran][::-1], color="#4c72b0")
        ax.set_xlabel("seconds")
        out.append(("Wall time per step", _png(fig)))
    j = by.get("journey") or {}
    lanes = [k for k in ("policy", "random", "rule", "oracle", "no_send") if (j.get(k) or {}).get("value_per_day")]
    if lanes:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for k in lanes:
            ax.plot(range(1, len(j[k]["value_per_day"]) + 1), j[k]["value_per_day"], marker="o", ms=3, label=k)
        ax.set_xlabel("journey day")
        ax.set_ylabel("mean reward per customer")
        ax.legend(fontsize=8)
        ax.set_title("Value per day: the policy over HTTP against the counterfactual lanes")
        out.append(("Journey value per day", _png(fig)))
    o = by.get("ope") or {}
    est = [(k.upper(), o[k]) for k in ("ips", "snips", "dr") if isinstance(o.get(k), dict) and o[k].get("value") is not None]
    if est:
        fig, ax = plt.subplots(figsize=(6, 3))
        for i, (_name, e) in enumerate(est):
            ax.errorbar([i], [e["value"]], yerr=[[e["value"] - e["ci_low"]], [e["ci_high"] - e["value"]]], fmt="o",
                        capsize=5)
        if o.get("logged_value") is not None:
            ax.axhline(o["logged_value"], color="grey", ls="--", label="champion's logged value")
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(est)), [n for n, _ in est])
        ax.set_ylabel("value per decision")
        ax.set_title(f"Off-policy value of the challenger {CHALLENGER}")
        out.append(("Off-policy evaluation", _png(fig)))
    return out


def _write_html(steps: list[Step], lines: list[str], path: Path) -> None:
    try:
        plots = _plots(steps)
    except Exception as exc:  # the report still lists the steps
        plots = []
        lines = [*lines, f"(plots failed: {exc})"]
    rows = "".join(
        f"<tr><td>{html.escape(s.title)}</td><td>{s.status}</td><td>{s.seconds:.1f}</td>"
        f"<td><pre>{html.escape(json.dumps(s.result, indent=1, default=str)[:4000]) if s.result else html.escape(s.message)}"
        f"</pre></td></tr>"
        for s in steps
    )
    figs = "".join(f"<h2>{html.escape(c)}</h2><img src='{uri}'>" for c, uri in plots)
    summary = "".join(f"<li>{html.escape(x)}</li>" for x in lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>cdp-decisioning demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px;"
        "vertical-align:top}pre{margin:0;max-height:20em;overflow:auto}</style>"
        f"<h1>cdp-decisioning demo</h1><h2>Summary</h2><ul>{summary}</ul>{figs}"
        "<h2>Steps</h2><table><tr><th>step</th><th>status</th><th>seconds</th>"
        f"<th>result</th></tr>{rows}</table>"
    )


@click.command("demo")
@click.option("--customers", type=int, default=20_000, show_default=True, help="Customers in the world.")
@click.option("--days", type=int, default=180, show_default=True, help="Days of simulated history.")
@click.option("--journey-days", type=int, default=14, show_default=True, help="Days of the simulated journey.")
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the whole demo.")
@click.option("--trials", type=int, default=10, show_default=True, help="Optuna trials per model.")
@click.option("--ope-folds", type=click.IntRange(min=2), default=3, show_default=True,
              help="Cross-fitting folds of the off-policy evaluation.")
@click.option("--ope-bootstrap", type=click.IntRange(min=10), default=200, show_default=True,
              help="Bootstrap resamples of the off-policy intervals.")
@workspace_option
@json_option
def command(customers, days, journey_days, seed, trials, ope_folds, ope_bootstrap, workspace, as_json):
    """Run the whole loop from nothing, over HTTP: simulate, import, features, train, champions,
    start the decision service, run the journey against it (decide, outcome, learn), refit the
    challenger policy from the served log, evaluate it off-policy and promote it only if it wins,
    measure the effect, check drift, stop the service.

    Every command step is the public subcommand, run in the workspace; a summary and an HTML report
    with plots (reports/demo.html) close it. The service is stopped on error and on Ctrl-C.
    """
    workspace.ensure()
    steps = _steps(customers, days, journey_days, seed, trials, ope_folds, ope_bootstrap)
    demo = Demo(workspace, seed)

    def terminated(signum, frame):  # SIGTERM stops the demo like Ctrl-C: the service is stopped too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    demo.prepare_registry()
    stop = next(s for s in steps if s.key == "stop")
    t0 = time.perf_counter()
    error: BaseException | None = None
    try:
        i = 0
        while i < len(steps):
            group = [steps[i]]
            while steps[i].group and i + len(group) < len(steps) and steps[i + len(group)].group == steps[i].group:
                group.append(steps[i + len(group)])
            if len(group) > 1:
                _run_group(group, demo)
            else:
                _run(steps[i], demo)
            i += len(group)
    except (DecisioningError, KeyboardInterrupt) as exc:
        error = exc
    finally:
        if demo.service is not None:
            progress("stopping the decision service")
            t1 = time.perf_counter()
            stop.result = _stop_service(demo)
            stop.status, stop.seconds = "done", time.perf_counter() - t1
        total = time.perf_counter() - t0
        lines = _summary_lines(steps)
        report = workspace.reports / "demo.html"
        _write_html(steps, [f"total {total:.0f} s", *lines], report)
    if error is not None:
        raise error
    if as_json:
        emit_json({"seconds": total, "report": report,
                   "steps": [{"title": s.title, "command": s.key, "status": s.status,
                              "seconds": s.seconds, "result": s.result} for s in steps]})
        return
    click.echo(f"\ncdp-decisioning demo in {workspace.root} ({total:.0f} s)")
    for line in lines:
        click.echo("  " + line)
    click.echo(f"  report: {report}")
