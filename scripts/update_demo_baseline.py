"""Re-measure CI's reduced-demo baseline: run the reduced demo, store its scores with `regress --update`.

Usage: python scripts/update_demo_baseline.py [--out runs/demo-baseline]   (or: make demo-baseline)
The demo's arguments and the runs gated come from tests/data/demo_baseline/settings.json. The baseline
files are written by `lape-eval regress --update` (lape_eval.reports.regress.make_baseline /
write_baseline, the one writer of the format), which first reports how the new scores differ from the
old baseline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

BASELINE = Path(__file__).resolve().parent.parent / "tests" / "data" / "demo_baseline"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo-baseline", help="Where the reduced demo writes (emptied first).")
    out = Path(parser.parse_args().out)
    settings = json.loads((BASELINE / "settings.json").read_text(encoding="utf-8"))
    shutil.rmtree(out, ignore_errors=True)
    lape_eval = [sys.executable, "-m", "lape_eval"]
    subprocess.run([*lape_eval, "demo", "--out", str(out), *settings["demo_args"]], check=True)
    for run in settings["runs"]:
        subprocess.run([*lape_eval, "regress", str(out / "results" / run), "--baseline", str(BASELINE / f"{run}.json"),
                        "--update"], check=True)


if __name__ == "__main__":
    main()
