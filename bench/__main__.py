"""Run the benchmarks (``make bench``): each module of this package in its own process, at its
defaults, one after the other; their figures are printed as ratios against bare baselines measured
in the same run (see each module's docstring).

    uv run python -m bench [NAME ...] [--workspace W] [--list]

NAME: any of the modules below (default: all). ``serving`` needs a prepared workspace (simulated,
profiles, features materialised, champions registered): ``--workspace W``, else
``$DECISIONING_HOME``, else ``./workspace`` as ``make demo`` leaves it; without one it is skipped
with the reason. A failing benchmark does not stop the others; the exit status says whether all
passed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

#: name -> what it measures (the order they run in: the quick ones first)
BENCHES: dict[str, str] = {
    "log": "decision log: appends, outcome ingest, joined read vs bare sqlite3",
    "policy": "policy layer per decision vs the bare reward arithmetic",
    "simulate": "simulator vs writing the same volume of random data",
    "profiles": "import + identity resolution vs a bare read and group-by",
    "features": "feature computation, training sets, materialisation, online reads vs bare baselines",
    "training": "training pipeline fit vs a bare lightgbm.train",
    "monitoring": "decision report and drift on a million decisions vs the bare read",
    "serving": "decide in process, batch of 100k and over HTTP vs bare floors and a no-op endpoint",
}


def _prepared(ws: Path) -> str | None:
    """Why ``ws`` cannot serve (None when it can)."""
    if not (ws / "profiles" / "profiles.parquet").is_file():
        return f"{ws} has no profiles (run `make demo` first, or pass --workspace)"
    if not (ws / "feature_repo").is_dir():
        return f"{ws} has no feature repository"
    if not (ws / "mlflow").is_dir():
        return f"{ws} has no MLflow store with champions"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHES)}")
    ap.add_argument("--workspace", type=Path, default=None, help="prepared workspace for the serving benchmark")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    a = ap.parse_args(argv)
    if a.list:
        for name, what in BENCHES.items():
            print(f"{name:12s} {what}")
        return 0
    unknown = [n for n in a.names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHES)}")
    names = a.names or list(BENCHES)
    ws = a.workspace or Path(os.environ.get("DECISIONING_HOME", "workspace"))
    results: dict[str, str] = {}
    for name in names:
        cmd = [sys.executable, "-m", f"bench.{name}"]
        if name == "serving":
            why = _prepared(ws)
            if why is not None:
                print(f"== bench.{name}: skipped: {why}", flush=True)
                results[name] = "skipped"
                continue
            cmd += ["--workspace", str(ws)]
        print(f"== bench.{name}: {BENCHES[name]}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        results[name] = f"{'ok' if rc == 0 else f'FAILED (exit {rc})'} in {time.perf_counter() - t0:.0f} s"
        print(f"== bench.{name}: {results[name]}", flush=True)
    print("\n".join(f"{n:12s} {r}" for n, r in results.items()))
    return 0 if all(not r.startswith("FAILED") for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
