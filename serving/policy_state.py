"""Where the service's policies come from.

A fitted policy is a pickle at ``<workspace>/policies/<name>.pkl`` (the journey and retraining
may write it; the service reads it and reloads it when the file changes). When there is none, or
it was built over other arms, the service warm-starts one exactly as the journey does
(``journey.warmstart.history_training_set`` over the logged campaign history of the profiles,
then ``Policy.update``) and writes the pickle, so the next start is fast.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
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


def policy_dir(workspace: Workspace) -> Path:
    return workspace.root / "policies"


def policy_path(workspace: Workspace, name: str) -> Path:
    return policy_dir(workspace) / f"{name}.pkl"


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
                       seed: int = 0, max_sends: int = 30_000) -> tuple[Policy, str]:
    """(policy, where it came from: 'file' or 'warm_start')."""
    arms = ArmSpace.from_config(layer.arms)
    path = policy_path(workspace, name)
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
    after = engine.swap_policy(arm, policy, source=f"promoted:{path.name}")
    saved = policy_path(engine.workspace, served)
    save_policy(policy, saved)
    return {"arm": arm, "policy": served, "candidate": path.name, "version_before": before.version,
            "version_after": after, "source_before": before.source, "saved": str(saved)}
