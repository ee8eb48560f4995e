"""ServedPolicies: an engine follows its policy files (what another worker process learned or
promoted) before its next decide, never reloads its own writes, and keeps serving its policy
when a changed file is not a usable policy. Two engines on one workspace stand for two workers."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from serving.schemas import DecisionRequest


@pytest.fixture
def two_engines(ws_copy):
    from serving.config import ServingConfig
    from serving.engine import DecisionEngine
    from serving.policy_state import ServedPolicies

    cfg = ServingConfig(refresh_seconds=0)
    engines = [DecisionEngine.open(ws_copy, cfg, start_refresh=False) for _ in range(2)]
    for e in engines:
        e.policy_files = ServedPolicies(e)
    yield engines
    for e in engines:
        e.close()


def _learned_copy(policy, seed: int):
    """The policy after one more update (a new version), as a learn would make it."""
    from policies.funnel import Feedback

    p = copy.deepcopy(policy)
    rng = np.random.default_rng(seed)
    n = 20
    X = rng.normal(size=(n, p.n_features_))
    opened = rng.random(n) < 0.5
    fb = Feedback(opened=opened, clicked=opened & (rng.random(n) < 0.5), converted=np.zeros(n, bool),
                  unsubscribed=np.zeros(n, bool), value=np.zeros(n))
    p.update(X, rng.integers(1, p.arms.n_arms, n), rng.random(n), np.full(n, 0.5), feedback=fb)
    return p


def test_a_policy_saved_by_one_engine_is_served_by_the_other_at_its_next_decide(two_engines, customer_ids):
    from serving.engine import _policy_version

    a, b = two_engines
    v0 = a.policy_arms["champion"].version
    assert b.policy_arms["champion"].version == v0
    new = _learned_copy(a.policy_arms["champion"].policy, 1)
    version = a.swap_policy("champion", new, source="learned")
    a.policy_files.save("champion", new, "learned")
    assert version != v0 and version == _policy_version(new)
    assert a.policy_files.check() == [] and a.policy_files.reloads == 0  # its own write: no reload

    assert b.policy_arms["champion"].version == v0  # nothing happens until b decides
    d = b.decide(DecisionRequest(customer_id=customer_ids[0]))
    assert d.policy_version == version
    assert b.policy_arms["champion"].source == "learned" and b.policy_files.reloads == 1
    b.decide(DecisionRequest(customer_id=customer_ids[1]))
    assert b.policy_files.reloads == 1  # unchanged files: no second load


def test_a_file_written_without_a_sidecar_is_served_as_file_and_junk_is_not(two_engines, customer_ids):
    from serving.policy_state import policy_path, save_policy

    a, b = two_engines
    path = policy_path(a.workspace, a.policy_name("champion"))
    other = _learned_copy(a.policy_arms["champion"].policy, 2)
    save_policy(other, path)  # e.g. a tool outside the service; the sidecar names the older file
    assert b.policy_files.check() == ["champion"]
    assert b.policy_arms["champion"].source == "file"
    served = b.policy_arms["champion"].version

    path.write_bytes(b"not a policy")
    assert b.policy_files.check() == []
    d = b.decide(DecisionRequest(customer_id=customer_ids[2]))
    assert d.policy_version == served  # the junk is not served; the last good policy answers
    assert b.policy_arms["champion"].version == served


def test_two_ab_arms_of_one_policy_class_keep_their_own_files(ws_copy, customer_ids):
    """Champion and challenger may both serve thompson (say, with other parameters): each arm has
    its own file, so what one arm learns or is promoted to never leaks into the other, in this
    process or in another worker's."""
    from serving.config import ABTest, ServingConfig
    from serving.engine import DecisionEngine
    from serving.policy_state import ServedPolicies, policy_path

    cfg = ServingConfig(refresh_seconds=0, ab_test=ABTest(challenger="thompson", challenger_share=0.5))
    a, b = (DecisionEngine.open(ws_copy, cfg, start_refresh=False) for _ in range(2))
    try:
        for e in (a, b):
            e.policy_files = ServedPolicies(e)
        champ, chall = policy_path(a.workspace, "thompson"), policy_path(a.workspace, "thompson", "challenger")
        assert champ != chall and champ.is_file() and chall.is_file()
        v_chall = b.policy_arms["challenger"].version
        new = _learned_copy(a.policy_arms["champion"].policy, 3)
        version = a.swap_policy("champion", new, source="learned")
        a.policy_files.save("champion", new, "learned")
        b.decide(DecisionRequest(customer_id=customer_ids[0]))
        assert b.policy_arms["champion"].version == version  # the other worker follows the champion
        assert b.policy_arms["challenger"].version == v_chall  # and the challenger is untouched
        assert a.policy_arms["challenger"].version == v_chall
    finally:
        a.close()
        b.close()
