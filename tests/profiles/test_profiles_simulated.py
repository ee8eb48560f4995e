"""Import of a small simulated world: identity resolution against the simulator's truth."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from core.workspace import Workspace
from features.profiles import build_profiles

world = pytest.importorskip("world", reason="the simulator (world/) is not installed")


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Workspace:
    from world import World, WorldConfig

    ws = Workspace(tmp_path_factory.mktemp("sim") / "ws").ensure()
    World.generate(WorldConfig(customers=3000, days=120, seed=3)).write(ws)
    return ws


@pytest.fixture(scope="module")
def imported(simulated) -> dict:
    summary = build_profiles(simulated.raw, simulated.profiles, truth_dir=simulated.truth)
    return summary.model_dump()


def test_identity_resolution_meets_the_goal_at_default_dirt(imported):
    assert imported["truth_records"] == imported["rows_accepted"]
    assert imported["precision"] >= 0.99
    assert imported["recall"] >= 0.99


def test_every_raw_row_is_accepted_or_rejected_with_a_reason(simulated, imported):
    owner = pd.read_parquet(simulated.truth / "record_owner.parquet")
    assert imported["rows_read"] == len(owner)
    rejects = pd.read_csv(simulated.profiles / "rejects.csv")
    rmap = pd.read_parquet(simulated.profiles / "record_map.parquet")
    assert rejects.groupby(["source", "file", "row"]).ngroups == imported["rows_rejected"]
    assert len(rmap) == imported["rows_accepted"]
    assert imported["rows_accepted"] + imported["rows_rejected"] == imported["rows_read"]
    # the simulator plants malformed rows; each one must be caught
    assert imported["rows_rejected"] > 0


def test_profiles_cover_every_customer_once(simulated, imported):
    prof = pd.read_parquet(simulated.profiles / "profiles.parquet")
    rmap = pd.read_parquet(simulated.profiles / "record_map.parquet")
    assert prof["customer_id"].is_unique and len(prof) == imported["customers"]
    assert set(rmap["customer_id"]) == set(prof["customer_id"])
    assert prof["first_seen_at"].notna().all()
    assert (prof["first_seen_at"] <= prof["last_seen_at"]).all()
    persons = pd.read_parquet(simulated.truth / "persons.parquet")
    # one profile per person, give or take the fragments nobody can link (anonymous devices, typos)
    assert 0.9 * len(persons) <= len(prof) <= 1.2 * len(persons)
    summary = json.loads((simulated.profiles / "summary.json").read_text())
    assert summary["precision"] == imported["precision"]
