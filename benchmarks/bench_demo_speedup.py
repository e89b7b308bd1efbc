"""Benchmark: ``make demo`` on a fresh clone of this commit against a fresh clone of an older one
(issue 14: at most 0.6 x the demo of 3fbabe8, measured on the same machine, one after the other).

``python -m benchmarks.run demo_speedup`` (``LAPE_BENCH_DEMO_REFERENCE`` changes the reference
commit). Both commits are cloned from this repository into ``runs/bench-demo-speedup/<commit>``
(emptied first, kept afterwards: their ``runs/demo/logs`` and ``summary.json`` are the evidence);
each clone runs the README's set-up (``make install``, not timed), then the two run ``make demo``
back to back, the reference first (timed: the wall time of the whole command, the first model load
from the PyPI package into the clone's empty cache included). Records: the wall-time
ratio (target <= 0.6), and each demo's steps with their times from its ``summary.json``.
The clones are of committed states: commit before measuring. About 25 minutes on 2 cores.
``--quick`` runs the reduced demo of CI (tests/data/demo_baseline/settings.json) in both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE = os.environ.get("LAPE_BENCH_DEMO_REFERENCE", "3fbabe8")
TARGET = 0.6


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _fresh_clone(commit: str, folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(folder)], check=True)
    _git("checkout", "--quiet", commit, cwd=folder)
    return folder


def _make(clone: Path, target: str, log_name: str, extra: list[str] = ()) -> float:
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "LAPE_EVAL_CACHE")}
    started = time.perf_counter()
    with open(clone / log_name, "w", encoding="utf-8") as log:
        subprocess.run(["make", target, *extra], cwd=clone, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - started


def _prepared(commit: str) -> Path:
    """A fresh clone of ``commit`` with the README's set-up done (``make install``, not timed)."""
    clone = _fresh_clone(commit, REPO_ROOT / "runs" / "bench-demo-speedup" / commit)
    _make(clone, "install", "install.log")
    return clone


def _demo(clone: Path, quick: bool) -> dict:
    extra = []
    if quick:
        settings = json.loads((REPO_ROOT / "tests" / "data" / "demo_baseline" / "settings.json").read_text())
        extra = ["DEMO_ARGS=" + " ".join(settings["demo_args"])]
    load = os.getloadavg()[0]
    seconds = _make(clone, "demo", "demo.log", extra)
    summary = json.loads((clone / "runs" / "demo" / "summary.json").read_text(encoding="utf-8"))
    return {"commit": _git("rev-parse", "--short", "HEAD", cwd=clone), "seconds": seconds, "load": load,
            "steps": summary["steps_seconds"], "forcing": summary["forcing_offdiag_clean"]}


def _steps(result: dict) -> str:
    return "; ".join(f"{title} {seconds:.0f} s" for title, seconds in result["steps"].items())


def run(quick: bool = False) -> list[dict]:
    clones = [_prepared(REFERENCE), _prepared(_git("rev-parse", "--short", "HEAD"))]  # both set up first,
    reference, current = (_demo(clone, quick) for clone in clones)  # then the two demos back to back
    ratio = current["seconds"] / reference["seconds"]
    what = "reduced demo of CI" if quick else "default demo"
    return [{
        "name": "demo_wall_vs_reference" + ("_quick" if quick else ""), "value": ratio, "unit": "x", "target": TARGET,
        "comparison": "<=", "ratio": ratio / TARGET, "passed": ratio <= TARGET,
        "baseline": (f"`make demo` ({what}) on a fresh clone of {current['commit']}: {current['seconds']:.0f} s vs a "
                     f"fresh clone of {reference['commit']}: {reference['seconds']:.0f} s, one after the other (the "
                     f"reference first; 1-min load average {reference['load']:.1f} and {current['load']:.1f} at their "
                     f"starts); first model load included, `make install` not timed. Steps of {current['commit']}: "
                     f"{_steps(current)}. Steps of {reference['commit']}: {_steps(reference)}. Off-diagonal forcing "
                     f"(clean) {current['forcing']} vs {reference['forcing']}"),
    }]


if __name__ == "__main__":
    import sys

    from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

    print_records(run("--quick" in sys.argv), baselines=True)
