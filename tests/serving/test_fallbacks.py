"""One fault-injection test per fallback: each answers (flagged, with a reason), never an error."""

from __future__ import annotations

import pytest

from serving.config import ServingConfig
from serving.engine import DecisionEngine
from serving.schemas import BatchDecisionRequest, DecisionRequest

pytestmark = pytest.mark.integration


def engine(ws, **config) -> DecisionEngine:
    return DecisionEngine.open(ws, ServingConfig(refresh_seconds=0, **config), start_refresh=False)


def test_feature_store_unreachable_means_no_send(ws_copy, customer_ids):
    online = ws_copy.feature_repo / "data" / "online_store.db"
    paths = list(ws_copy.feature_repo.rglob("*.db"))
    assert paths, "the prepared workspace has an online store"
    for p in paths:
        p.rename(p.with_suffix(".gone"))
    eng = engine(ws_copy)
    try:
        out = eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[:50]))
        assert all(d.fallback and d.fallback_reason == "feature_store_unavailable" for d in out)
        assert all(not d.action.send and d.probability == 1.0 for d in out)
        assert len(eng.log) == 50
    finally:
        eng.close()
    del online


def test_model_missing_uses_the_safe_rule(ws_copy, customer_ids, tmp_path):
    eng = engine(ws_copy, registry_uri=f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        out = eng.decide_batch(BatchDecisionRequest(customer_ids=customer_ids[:200]))
        assert all(d.fallback and d.fallback_reason == "model_missing" for d in out)
        assert all(d.policy == "safe_rule" and d.probability == 1.0 for d in out)
        sends = [d for d in out if d.action.send]
        assert sends and all(d.action.arm == "email|pct10|10" for d in sends)
        assert not any(d.action.send and "consent" in d.guardrails and d.action.channel != "email" for d in out)
    finally:
        eng.close()


def test_registry_down_uses_the_safe_rule(ws_copy, customer_ids, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    eng = engine(ws_copy, registry_uri=f"sqlite:///{blocker}/mlflow.db")
    try:
        d = eng.decide(DecisionRequest(customer_id=customer_ids[5]))
        assert d.fallback and d.fallback_reason == "registry_unavailable"
    finally:
        eng.close()


def test_unknown_customer_gets_a_cold_start_decision(ws_copy):
    eng = engine(ws_copy)
    try:
        d = eng.decide(DecisionRequest(customer_id="c_never_seen_before"))
        assert d.fallback and d.fallback_reason == "cold_start"
        assert not d.action.send  # no consent known: no send
        assert d.policy == "thompson"
    finally:
        eng.close()


def test_champion_change_is_picked_up_without_restart(ws_copy, customer_ids):
    from training.tracking import CHAMPION, Tracker

    eng = engine(ws_copy)
    try:
        before = eng.decide(DecisionRequest(customer_id=customer_ids[0])).model_versions["propensity"]
        tr = Tracker(ws_copy)
        mv = tr.client.create_model_version("propensity", tr.client.get_model_version("propensity", before).source,
                                            run_id=tr.version("propensity", CHAMPION).run_id)
        tr.client.set_model_version_tag("propensity", mv.version, "run_id", tr.version("propensity", CHAMPION).run_id)
        tr.set_alias("propensity", CHAMPION, mv.version)
        assert eng.champions.refresh()
        after = eng.decide(DecisionRequest(customer_id=customer_ids[0]))
        assert after.model_versions["propensity"] == str(mv.version) != before
        assert not after.fallback
        # a reload that fails keeps the old models answering
        eng.champions._tracker = None
        eng.champions.tracking_uri = "sqlite:////proc/nonexistent/x.db"
        assert not eng.champions.refresh()
        assert eng.decide(DecisionRequest(customer_id=customer_ids[0])).model_versions["propensity"] == str(mv.version)
    finally:
        eng.close()
