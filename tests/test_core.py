from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from core.catalog import DEFAULT_CATALOG, Catalog, Offer, OfferKind
from core.config import load_config
from core.errors import ConfigError
from core.workspace import Workspace
from decisioning.cli import cli


def test_workspace_resolution_prefers_argument_then_env(tmp_path):
    env = {"DECISIONING_HOME": str(tmp_path / "from_env")}
    assert Workspace.resolve(tmp_path / "arg", env).root == (tmp_path / "arg").resolve()
    assert Workspace.resolve(None, env).root == (tmp_path / "from_env").resolve()
    assert Workspace.resolve(None, {}).root.name == "workspace"


def test_catalog_rejects_duplicate_offer_ids():
    o = Offer(id="a", kind=OfferKind.CONTENT)
    with pytest.raises(ValueError, match="unique"):
        Catalog(offers=(o, o))


def test_offer_net_value_pays_for_discount_and_fixed_cost():
    assert DEFAULT_CATALOG["pct20"].net_value(100.0) == pytest.approx(80.0)
    assert DEFAULT_CATALOG["free_shipping"].net_value(100.0) == pytest.approx(94.0)


class _Cfg(BaseModel):
    n: int = 3


def test_load_config_names_the_bad_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("n: many\n")
    with pytest.raises(ConfigError, match=r"n: .*integer"):
        load_config(_Cfg, p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Cfg, tmp_path / "missing.yaml")
    assert load_config(_Cfg, None, n=5).n == 5


def test_cli_help_lists_commands():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "workspace" in result.output
