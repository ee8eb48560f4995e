"""``decisioning simulate`` through the real entry point: JSON output and error paths."""

from __future__ import annotations

import json

import pytest

from decisioning.cli import main


def _run(capsys, *args) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", *args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_simulate_json(tmp_path, capsys):
    code, out, err = _run(capsys, "--customers", "300", "--days", "20", "--seed", "3", "--workspace",
                          str(tmp_path / "ws"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert set(summary["rows"]) == {"customers", "orders", "events", "engagements"}
    assert set(summary["malformed"]) == set(summary["rows"])
    assert summary["rows"]["events"] > 0 and summary["seconds"] >= 0 and summary["peak_memory_mb"] > 0
    assert (tmp_path / "ws" / "truth" / "world.yaml").is_file()
    assert (tmp_path / "ws" / "raw" / "orders.parquet").is_file()


def test_simulate_csv_with_config_file(tmp_path, capsys):
    cfg = tmp_path / "w.yaml"
    cfg.write_text("customers: 5000\ndays: 10\ndirt:\n  malformed_share: 0.0\n")
    code, out, err = _run(capsys, "--config", str(cfg), "--customers", "200", "--format", "csv",
                          "--workspace", str(tmp_path / "ws"))
    assert code == 0, err
    assert "wrote" in out and (tmp_path / "ws" / "raw" / "events.csv").is_file()
    assert "customers: 200" in (tmp_path / "ws" / "truth" / "world.yaml").read_text()
    assert "malformed_share: 0.0" in (tmp_path / "ws" / "truth" / "world.yaml").read_text()


@pytest.mark.parametrize("args, match", [
    (["--customers", "0"], "customers"),
    (["--days", "-3"], "days"),
    (["--customers", "lots"], "--customers"),
    (["--format", "xlsx"], "--format"),
])
def test_bad_options_exit_2_with_one_message(tmp_path, capsys, args, match):
    code, _, err = _run(capsys, *args, "--workspace", str(tmp_path / "ws"))
    assert code == 2 and match in err and "Traceback" not in err


def test_unwritable_workspace_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(capsys, "--customers", "10", "--days", "5", "--workspace", str(blocker / "ws"))
    assert code == 2 and "cannot write to workspace" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


@pytest.mark.parametrize("text, match", [("days: [\n", "not valid YAML"), ("dirt: 3\n", "dirt"),
                                         (None, "does not exist")])
def test_bad_config_file_exits_2(tmp_path, capsys, text, match):
    path = tmp_path / "cfg.yaml"
    if text is not None:
        path.write_text(text)
    code, _, err = _run(capsys, "--config", str(path), "--workspace", str(tmp_path / "ws"))
    assert code == 2 and match in err and "Traceback" not in err
