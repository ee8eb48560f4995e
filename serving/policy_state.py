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
