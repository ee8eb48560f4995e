"""Where the service's policies come from.

A fitted policy is a pickle at ``<workspace>/policies/<name>.pkl`` (the journey and retraining
may write it; the service reads it and reloads it when the file changes: ``ServedPolicies``).
When there is none, or it was built over other arms, the service warm-starts one exactly as the
journey does (``journey.warmstart.history_training_set`` over the logged campaign history of the
profiles, then ``Policy.update``) and writes the pickle, so the next start is fast.

Several worker processes serve one workspace: the policy FILE is the truth they share. Whoever
changes a served policy (a learn, a promotion) writes its file (atomically) and a small sidecar
``<name>.pkl.meta.json`` that says where it came from; every engine with a ``ServedPolicies``
compares the two files' identity (inode, mtime, size: two ``stat`` calls, ~2 us) before each
decide and reloads a changed pickle (~20 ms for a 10 MB Thompson posterior) before deciding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import tempfile
import threading
from pathlib import Path

import pandas as pd

from core.errors import WorkspaceError
from core.workspace import Workspace
from policies.arms import ArmSpace
from policies.bandits import make_policy
from policies.base import Policy
from policies.config import PolicyLayerConfig
from policies.guardrails import Guardrails
from policies.reward import RewardConfig

log = logging.getLogger(__name__)


def policy_dir(workspace: Workspace) -> Path:
    return workspace.root / "policies"


def policy_path(workspace: Workspace, name: str, arm: str = "champion") -> Path:
    """The file of the ``name`` policy served in A/B arm ``arm``: ``<name>.pkl`` for the champion,
    ``<name>.<arm>.pkl`` for another arm, so two arms never share a file, even when both serve
    the same policy class (each learns from its own decisions)."""
    return policy_dir(workspace) / (f"{name}.pkl" if arm == "champion" else f"{name}.{arm}.pkl")


def load_policy(path: Path, arms: ArmSpace) -> Policy | None:
    """The pickled policy at ``path`` when it exists, is a fitted Policy and uses ``arms``."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            policy = pickle.load(f)
    except Exception:
        return None
    if not isinstance(policy, Policy) or not policy.is_initialised or not policy.arms.same_as(arms):
        return None
    from policies.context import CONTEXT_COLUMNS

    if getattr(policy, "n_features_", None) != len(CONTEXT_COLUMNS):  # built on another context
        return None
    return policy


def save_policy(policy: Policy, path: Path) -> None:
    """Atomically write the pickle (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(policy, f)
    os.replace(tmp, path)


def warm_start(workspace: Workspace, name: str, params: dict, layer: PolicyLayerConfig, seed: int = 0,
               max_sends: int = 30_000) -> Policy:
    """A policy fitted off-policy on the workspace's logged campaign history (the journey's warm
    start). Raises WorkspaceError when there are no profiles."""
    from features.compute import ProfileData
    from journey.warmstart import history_training_set

    arms = ArmSpace.from_config(layer.arms)
    policy = make_policy(name, arms, **({"seed": seed} | dict(params)))
    if not policy.learns:
        return policy
    data = ProfileData.load(workspace.profiles)
    customers = pd.DataFrame({"customer_id": data.profiles["customer_id"].astype(str),
                              "timezone": data.profiles["timezone"].fillna("Asia/Shanghai").astype(str)})
    ends = [s.max() for s in (data.engagements.get("sent_at"), data.orders.get("ordered_at"),
                              data.events.get("occurred_at")) if s is not None and len(s)]
    if not ends:
        raise WorkspaceError(f"no history in {workspace.profiles} to warm-start the policy from")
    guard = Guardrails(arms, layer.guardrails)
    ts = history_training_set(data, customers, arms, guard.hour_plan, RewardConfig(), max(ends),
                              max_sends=max_sends, seed=seed)
    if len(ts) == 0:
        raise WorkspaceError("the logged campaign history holds no usable sends to warm-start from")
    policy.initialise(ts.context)
    policy.update(ts.context, ts.arm, ts.reward, ts.propensity,
                  feedback=ts.feedback if policy.needs_feedback else None)
    return policy


def load_or_warm_start(workspace: Workspace, name: str, params: dict, layer: PolicyLayerConfig,
                       seed: int = 0, max_sends: int = 30_000, arm: str = "champion") -> tuple[Policy, str]:
    """(policy, where it came from: 'file' or 'warm_start') of A/B arm ``arm`` (its own file)."""
    arms = ArmSpace.from_config(layer.arms)
    path = policy_path(workspace, name, arm)
    policy = load_policy(path, arms)
    if policy is not None:
        return policy, "file"
    policy = warm_start(workspace, name, params, layer, seed, max_sends)
    with contextlib.suppress(OSError):  # a read-only workspace still serves
        save_policy(policy, path)
    return policy, "warm_start"


#: a candidate is named by its file under <workspace>/policies/ (no paths: the service only ever
#: unpickles files in its own workspace)
CANDIDATE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,199}$"


def candidate_path(workspace: Workspace, candidate: str) -> Path:
    """``<workspace>/policies/<candidate>`` (``.pkl`` added when missing). InputError for a name
    that is not a plain file name."""
    import re

    from core.errors import InputError

    if not re.match(CANDIDATE_PATTERN, candidate or "") or ".." in candidate:
        raise InputError(f"candidate: {candidate!r} is not a policy file name under {policy_dir(workspace)} "
                         "(letters, digits, _ . -; no path)")
    name = candidate if candidate.endswith(".pkl") else f"{candidate}.pkl"
    return policy_dir(workspace) / name


def promote_candidate(engine, candidate: str, arm: str = "champion") -> dict:
    """Serve the fitted policy file ``candidate`` (under ``<workspace>/policies/``) in A/B arm
    ``arm`` from now on, through ``DecisionEngine.swap_policy`` (decides in flight finish on the
    old policy), and save it as that arm's policy file, so a restart serves it too.

    InputError (the service answers 400) when the arm does not exist, the file is missing, is not
    a fitted policy over the service's arms and context, or is of another policy class than the
    one the arm is configured to serve (change ``policy`` in the serving config for that)."""
    from core.errors import InputError

    if arm not in engine.policy_arms:
        raise InputError(f"arm: {arm!r} is not an arm of this service ({sorted(engine.policy_arms)})")
    path = candidate_path(engine.workspace, candidate)
    if not path.is_file():
        raise InputError(f"candidate: no policy file {path.name} under {path.parent}")
    policy = load_policy(path, engine.arm_space)
    if policy is None:
        raise InputError(f"candidate: {path.name} is not a fitted policy over this service's arms and context")
    served = engine.policy_name(arm)
    if type(policy).name != served:
        raise InputError(f"candidate: {path.name} is a {type(policy).name} policy; arm {arm} serves {served} "
                         "(set `policy` in the serving config to serve another class)")
    before = engine.policy_arms[arm]
    source = f"promoted:{path.name}"
    after = engine.swap_policy(arm, policy, source=source)
    files = getattr(engine, "policy_files", None)
    if files is not None:  # the other worker processes serve it before their next decide
        saved = files.save(arm, policy, source)
    else:
        saved = policy_path(engine.workspace, served, arm)
        save_policy(policy, saved)
    return {"arm": arm, "policy": served, "candidate": path.name, "version_before": before.version,
            "version_after": after, "source_before": before.source, "saved": str(saved)}


def meta_path(path: Path) -> Path:
    """The sidecar of a policy file: where the policy in it came from (``ServedPolicies.save``)."""
    return path.with_name(path.name + ".meta.json")


def _file_key(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of ``path``, None when it does not exist. ``save_policy`` replaces
    the file with a new one (a new inode), so every save changes the key."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class ServedPolicies:
    """Keeps the policies an engine serves equal to their files under ``<workspace>/policies/``,
    across worker processes (module doc).

        files = ServedPolicies(engine)   # the files as they are now count as served
        files.check()                    # before each decide: reload what another process changed
        files.save(arm, policy, source)  # after serving a new policy here: the others follow

    A changed file that is not a fitted policy of the arm's class over the engine's arms is not
    served (the old policy keeps answering, a warning is logged). Thread-safe."""

    def __init__(self, engine):
        self.engine = engine
        self._lock = threading.RLock()
        self.reloads = 0  # policies loaded from a file another process (or tool) wrote
        self._path_of: dict[tuple[str, str], tuple[Path, Path]] = {}
        self._seen: dict[str, tuple] = {arm: self._keys(arm) for arm in engine.policy_arms}

    def _paths(self, arm: str) -> tuple[Path, Path]:
        # built once per (arm, policy name): check() runs before every decide, and building the
        # paths cost 3x the two stat calls (~10 of ~12 us)
        key = (arm, self.engine.policy_name(arm))
        got = self._path_of.get(key)
        if got is None:
            path = policy_path(self.engine.workspace, key[1], arm)
            got = self._path_of[key] = (path, meta_path(path))
        return got

    def _keys(self, arm: str) -> tuple:
        path, meta = self._paths(arm)
        return _file_key(path), _file_key(meta)

    def check(self) -> list[str]:
        """Reload every arm whose policy file (or its sidecar) changed since this engine last
        read or wrote it; returns the arms that now serve another policy or source."""
        changed = []
        for arm, seen in list(self._seen.items()):
            if self._keys(arm) == seen:
                continue
            with self._lock:
                keys = self._keys(arm)
                if keys != self._seen[arm] and self._reload(arm, keys):
                    changed.append(arm)
        return changed

    def _reload(self, arm: str, keys: tuple) -> bool:
        old_key = self._seen[arm][0]
        self._seen[arm] = keys
        path, meta = self._paths(arm)
        current = self.engine.policy_arms.get(arm)
        policy = current.policy if current is not None else None
        if keys[0] is not None and keys[0] != old_key:
            loaded = load_policy(path, self.engine.arm_space)
            if loaded is None or type(loaded).name != self.engine.policy_name(arm):
                log.warning("policy file %s changed but is not a fitted %s policy over the served arms: "
                            "still serving the previous one", path, self.engine.policy_name(arm))
                return False
            policy = loaded
        if policy is None:
            return False
        source = "file"
        try:
            info = json.loads(meta.read_text())
            if tuple(info.get("key") or ()) == keys[0]:
                source = str(info.get("source") or "file")
        except (OSError, ValueError):
            pass
        if current is not None and current.policy is policy and current.source == source:
            return False
        self.engine.swap_policy(arm, policy, source=source)
        self.reloads += 1
        log.info("serving the %s policy of %s (source %s)", arm, path.name, source)
        return True

    def save(self, arm: str, policy: Policy, source: str) -> Path:
        """Write ``policy`` as arm ``arm``'s file, and the sidecar naming ``source``; this engine
        already serves it (``swap_policy``), so it does not reload its own write."""
        with self._lock:
            path, meta = self._paths(arm)
            save_policy(policy, path)
            info = {"key": list(_file_key(path) or ()), "source": source, "pid": os.getpid()}
            fd, tmp = tempfile.mkstemp(dir=meta.parent, prefix=f".{meta.name}.")
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            os.replace(tmp, meta)
            self._seen[arm] = self._keys(arm)
            return path
