"""``decisioning profiles`` through the real entry point: outputs, --json, and every error path."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _rawdata import crm, event, order, send, write_source

from decisioning.cli import main
from features.profiles import PROFILE_SCHEMA
from features.schemas import SOURCES


def run_subprocess(*args: str) -> subprocess.CompletedProcess:
    """The real entry point in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-c", "from decisioning.cli import main; main()", "profiles", *args],
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def run(capsys):
    """``decisioning.cli.main`` in process (fast): returns (exit code, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(["profiles", *args])
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err

    return invoke


def _small_world(raw) -> None:
    write_source(raw, "customers", [crm("C1", phone="13800138000"), crm("C2", email="b@x.com")])
    write_source(raw, "orders", [order("O1", crm_id="C1"), order("O2", email="B@x.com", amount=-1)], "parquet")
    write_source(raw, "events", [event("E1", device_id="D1", crm_id="C2", event_type="login")])
    write_source(raw, "engagements", [send("S1", phone="+86 138 0013 8000", channel="sms")])


def test_json_summary_and_the_output_contract(raw, workspace):
    _small_world(raw)
    result = run_subprocess("--workspace", str(workspace.root), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["customers"] == 2
    assert summary["sources"]["orders"] == {
        "files": ["orders.parquet"], "rows_read": 2, "rows_accepted": 1, "rows_rejected": 1,
        "rejects_by_reason": {"negative amount": 1}, "warnings_by_reason": {}, "ignored_columns": [],
    }
    assert summary["rejects_by_reason"] == {"negative amount": 1}
    assert summary["precision"] is None  # no truth in this workspace
    assert json.loads((workspace.profiles / "summary.json").read_text())["customers"] == 2

    prof = pq.read_table(workspace.profiles / "profiles.parquet")
    assert prof.schema.equals(PROFILE_SCHEMA)
    for name in ("orders", "events", "engagements"):
        t = pq.read_table(workspace.profiles / f"{name}.parquet")
        schema = SOURCES[name]
        assert t.column_names == ["customer_id"] + [
            c.name for c in schema.columns if c.name not in schema.identity_columns
        ]
        for f in t.schema:
            if pa.types.is_timestamp(f.type):
                assert f.type.tz == "UTC"
    imap = pd.read_parquet(workspace.profiles / "identity_map.parquet")
    assert list(imap.columns) == ["key_type", "key_value", "customer_id", "linked"]
    assert {"8613800138000", "b@x.com", "D1", "C1", "C2"} <= set(imap["key_value"])
    for f in ("record_map.parquet", "rejects.csv", "warnings.csv", "merge_report.json"):
        assert (workspace.profiles / f).is_file()


def test_human_summary(raw, workspace, run):
    _small_world(raw)
    code, out, err = run("--workspace", str(workspace.root))
    assert code == 0, err
    assert "customers: 2" in out and "1 negative amount" in out


def test_sources_option_reads_any_folder(tmp_path, workspace, run):
    exports = tmp_path / "exports"
    write_source(exports, "orders", [order("O1", phone="13800138000")])
    code, out, err = run("--sources", str(exports), "--workspace", str(workspace.root), "--json")
    assert code == 0, err
    assert json.loads(out)["customers"] == 1
    assert not (workspace.raw / "orders.csv").exists()


def _bad_inputs(tmp_path):
    def missing_folder(p):
        return p / "nope"

    def no_source(p):
        (p / "notes.txt").write_text("hello")
        return p

    def empty_file(p):
        (p / "orders.csv").write_text("")
        return p

    def header_only(p):
        (p / "orders.csv").write_text("order_id,crm_id,ordered_at,amount\n")
        return p

    def empty_parquet(p):
        pq.write_table(pa.table({"order_id": pa.array([], pa.string()), "ordered_at": pa.array([], pa.string()),
                                 "amount": pa.array([], pa.float64())}), p / "orders.parquet")
        return p

    def missing_column(p):
        write_source(p, "orders", [order("O1", crm_id="C1")], columns=["order_id", "crm_id", "ordered_at"])
        return p

    def wrong_parquet_type(p):
        pq.write_table(pa.table({"order_id": ["O1"], "crm_id": ["C1"], "ordered_at": [True], "amount": [1.0]}),
                       p / "orders.parquet")
        return p

    def wrong_csv_type(p):
        write_source(p, "orders", [order(f"O{i}", crm_id="C1", amount="a lot") for i in range(8)])
        return p

    def semicolons(p):
        (p / "orders.csv").write_text("order_id;crm_id;ordered_at;amount\nO1;C1;2025-01-01;3\n")
        return p

    def twice(p):
        write_source(p, "orders", [order("O1", crm_id="C1")], "csv")
        write_source(p, "orders", [order("O1", crm_id="C1")], "parquet")
        return p

    def corrupt_parquet(p):
        (p / "orders.parquet").write_bytes(b"PAR1 this is not parquet")
        return p

    return {
        "missing_folder": (missing_folder, "sources folder does not exist"),
        "no_source": (no_source, "no source file found"),
        "empty_file": (empty_file, "orders.csv: empty file"),
        "header_only": (header_only, "orders.csv: empty file (no data rows)"),
        "empty_parquet": (empty_parquet, "orders.parquet: empty file"),
        "missing_column": (missing_column, "missing required column(s) amount"),
        "wrong_parquet_type": (wrong_parquet_type, "column 'ordered_at' must hold ISO 8601 timestamps; its type is"),
        "wrong_csv_type": (wrong_csv_type, "column 'amount' must hold numbers: 8 of 8 values cannot be read"),
        "semicolons": (semicolons, "is the file comma-separated?"),
        "twice": (twice, "source 'orders' is given more than once"),
        "corrupt_parquet": (corrupt_parquet, "not a readable Parquet file"),
    }


@pytest.mark.parametrize("case", sorted(_bad_inputs(None)))
def test_bad_input_gives_one_clear_message_and_exit_2(case, tmp_path, workspace, run):
    make, message = _bad_inputs(tmp_path)[case]
    folder = tmp_path / "src"
    folder.mkdir()
    code, out, err = run("--sources", str(make(folder)), "--workspace", str(workspace.root))
    assert code == 2, out + err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert message in errors[0]
    assert not (workspace.profiles / "summary.json").exists()  # nothing half-written


def test_bad_input_in_a_fresh_interpreter_has_no_traceback(tmp_path, workspace):
    (tmp_path / "orders.csv").write_text("order_id,ordered_at\nO1,2025-01-01\n")
    result = run_subprocess("--sources", str(tmp_path), "--workspace", str(workspace.root), "--json")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        "error: orders.csv: missing required column(s) amount for source 'orders'; found order_id, ordered_at"
    )
    assert result.stdout == ""
