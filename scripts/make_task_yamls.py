#!/usr/bin/env python3
"""Write the per-task and group YAMLs of tasks/ (lm-eval task suite of lape-eval).

The prompts, decoding settings and metrics live in the hand-written templates ``tasks/**/_*_yaml``
and ``tasks/_translation_yaml``, except the forcing template ``tasks/forcing/_forcing_yaml``, written
from the forcing protocol of ``lape_eval/evaluation/forcing.py`` (shared with the calibration sweep);
the names, languages and metadata of every task and group come from ``lape_eval/evaluation/suite.py``.
Run from the repository root after changing any of them::

    python scripts/make_task_yamls.py            # rewrite tasks/ (stale generated files are removed)
    python scripts/make_task_yamls.py --check    # exit 1 if tasks/ is out of date (CI)

The output is deterministic; commit it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lape_eval.evaluation.suite import generated_files, write_shipped_tasks  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks-dir", type=Path, default=REPO / "tasks")
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when out of date")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as scratch:
            write_shipped_tasks(Path(scratch))
            expected, actual = generated_files(Path(scratch)), generated_files(args.tasks_dir)
        stale = sorted(set(expected) ^ set(actual) | {k for k in expected if actual.get(k) != expected[k]})
        if stale:
            print(f"{len(stale)} generated task files are out of date, e.g. {stale[:5]}; "
                  "run python scripts/make_task_yamls.py", file=sys.stderr)
            return 1
        print(f"{len(expected)} generated task files are up to date.")
        return 0
    written = write_shipped_tasks(args.tasks_dir)
    print(f"wrote {len(written)} task files under {args.tasks_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
