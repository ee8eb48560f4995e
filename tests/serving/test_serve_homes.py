"""`decisioning serve` gives each run a private BentoML home and sweeps the homes of runs that
were killed with -9 (whose own clean-up never ran)."""

from __future__ import annotations

import os
import subprocess
import sys

from decisioning.commands.serve import HOME_PREFIX, OWNER_FILE, sweep_stale_homes


def test_homes_of_dead_runs_are_removed_and_the_others_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer exists (reuse within this test is not a concern)

    def home(name: str, owner: str | None):
        d = tmp_path / f"{HOME_PREFIX}{name}"
        (d / "prometheus_multiproc_dir").mkdir(parents=True)
        if owner is not None:
            (d / OWNER_FILE).write_text(owner)
        return d

    dead, alive, unowned, garbled = (home("a", str(gone.pid)), home("b", str(os.getpid())), home("c", None),
                                     home("d", "not a pid"))
    other = tmp_path / "something-else"
    other.mkdir()
    assert sweep_stale_homes(tmp_path) == [dead]
    assert not dead.exists() and alive.is_dir() and unowned.is_dir() and garbled.is_dir() and other.is_dir()
    assert sweep_stale_homes(tmp_path) == []
