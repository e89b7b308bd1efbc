"""CI's reduced demo: the real commands on Gemma-3-270M, gated by `lape-eval regress` on committed scores.

The baseline (tests/data/demo_baseline/) is written by `make demo-baseline`; its README gives the
tolerance and how it was measured. Generation is greedy and runs on CPU, so the scores are
reproducible up to floating-point differences between machines, which the tolerance absorbs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

BASELINE = Path(__file__).parent.parent / "data" / "demo_baseline"
SETTINGS = json.loads((BASELINE / "settings.json").read_text(encoding="utf-8"))


def _lape_eval(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "lape_eval", *args], capture_output=True, text=True, env=env)


@pytest.mark.slow
def test_reduced_demo_matches_the_committed_baseline(gemma, tmp_path):
    demo = _lape_eval("demo", "--out", str(tmp_path), *SETTINGS["demo_args"])
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    forcing = summary["forcing_offdiag_clean"]
    assert forcing["steered"] > forcing["unsteered"], forcing  # steering must force languages at all
    for run in SETTINGS["runs"]:
        gate = _lape_eval("regress", str(tmp_path / "results" / run), "--baseline", str(BASELINE / f"{run}.json"),
                          "--tolerance", str(SETTINGS["tolerance"]), "--tolerance-se", "0", "--fail-on-missing")
        assert gate.returncode == 0, f"{run}:\n{gate.stdout}\n{gate.stderr}"
