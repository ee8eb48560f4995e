"""WorldConfig: defaults, validation errors that name the field, YAML round trip."""

from __future__ import annotations

import pytest

from core.config import dump_config, load_config
from core.errors import ConfigError
from world import WorldConfig


def _load(tmp_path, text: str, **overrides) -> WorldConfig:
    p = tmp_path / "world.yaml"
    p.write_text(text)
    return load_config(WorldConfig, p, **overrides)


def test_defaults_are_documented_and_reproducible():
    cfg = WorldConfig()
    assert cfg.customers == 10_000 and cfg.days == 180 and cfg.seed == 0
    assert cfg.history_end.isoformat() == "2026-06-30T00:00:00+00:00"
    assert cfg.history_start.isoformat() == "2026-01-01T00:00:00+00:00"
    assert cfg.shifts == []
    # every field of every section carries a description (the README table is built from them)
    sections = [cfg] + [getattr(cfg, n) for n in ("population", "purchases", "churn", "channels", "response",
                                                  "activity", "logging_policy", "dirt")]
    for section in sections:
        for name, field in type(section).model_fields.items():
            if name in ("population", "purchases", "churn", "channels", "response", "activity", "logging_policy",
                        "dirt", "shifts"):
                continue
            assert field.description, f"{type(section).__name__}.{name} lacks a description"
    assert abs(sum(cfg.offer_probabilities()) - 1) < 1e-12 and abs(sum(cfg.hour_probabilities()) - 1) < 1e-12


@pytest.mark.parametrize("text, match", [
    ("customers: 0\n", "customers"),
    ("days: many\n", "days"),
    ("population:\n  timezones: {Mars/Olympus: 1.0}\n", "unknown time zone"),
    ("dirt:\n  malformed_share: 0.9\n", "dirt.malformed_share"),
    ("channels:\n  open_rate: {sms: 0.1}\n", "every channel"),
    ("logging_policy:\n  offer_weights: {bogus: 2}\n", "not in the catalog"),
    ("logging_policy:\n  hour_weights: {3: 2}\n", "send hours"),
    ("no_such_section: 1\n", "no_such_section"),
    ("purchases:\n  min_order_value: 1\n", "net value negative"),
    ("shifts:\n  - {start_day: -1}\n", "shifts.0.start_day"),
])
def test_config_errors_name_the_field(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        _load(tmp_path, text)


def test_yaml_round_trip_including_derived_history_start(tmp_path):
    cfg = _load(tmp_path, "seed: 4\ndirt:\n  key_typo_share: 0.01\nshifts:\n  - {start_day: 200, timezone: "
                          "Asia/Tokyo, affinity_delta: {email: -1.0}}\n", customers=123)
    assert cfg.customers == 123 and cfg.dirt.key_typo_share == 0.01 and cfg.shifts[0].timezone == "Asia/Tokyo"
    dump_config(cfg, tmp_path / "out.yaml")
    assert "history_start" in (tmp_path / "out.yaml").read_text()
    assert load_config(WorldConfig, tmp_path / "out.yaml") == cfg


def test_readme_documents_every_parameter():
    from pathlib import Path

    from world.docs import parameter_table, person_table

    readme = (Path(__file__).parents[2] / "world" / "README.md").read_text()
    for line in (parameter_table() + "\n" + person_table()).splitlines()[2:]:
        name = line.split("|")[1].strip()
        if name.startswith("`"):
            assert name in readme, f"world/README.md lacks {name}: run `uv run python -m world.docs`"
