"""Compare forcing-grid runs (``lape_forcing_grid`` with ``--log_samples``) on the same prompts.

    python scripts/compare_forcing_runs.py NAME=FOLDER NAME=FOLDER [...] [--reference NAME]

Prints a Markdown table: per run the off-diagonal success (``target_rate_clean``: a non-degenerate answer
in the target language), the same without English as the target, the degenerate share and the mean
answer length, each rate with its Wilson 95 % interval; per target language the off-diagonal rate; and
the exact McNemar test of every run against the reference run (default: the first) on the prompts both
answered (paired by source, target and question). Used for docs/experiments/lape-vs-diffmean-gemma.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lape_eval.demo.headline import FORCING_TASK, SUCCESS
from lape_eval.reports.plots import family_ordered
from lape_eval.reports.results import load_runs
from lape_eval.reports.significance import mcnemar_exact, wilson_interval


def outcomes(folder: Path) -> dict[tuple[str, str, str], dict]:
    """``{(source, target, question id): sample}`` of the newest run under ``folder``."""
    runs = sorted(load_runs([folder]), key=lambda run: run.path.name)
    samples = runs[-1].samples(FORCING_TASK) if runs else None
    if not samples:
        sys.exit(f"{folder}: no logged samples of {FORCING_TASK} (run lm-eval with --log_samples).")
    return {(s["doc"]["source_lang"], s["doc"]["target_lang"], s["doc"]["id"]): s
            for s in samples if s.get("filter", "none") == "none"}


def rate(samples: list[dict], metric: str = SUCCESS) -> str:
    interval = wilson_interval(sum(1 for s in samples if float(s[metric]) > 0), len(samples))
    return f"{100 * interval.rate:.1f} [{100 * interval.low:.1f}, {100 * interval.high:.1f}]"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=FOLDER")
    parser.add_argument("--reference", default=None, help="The run the others are tested against (default: the first).")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, _, folder = item.partition("=")
        if not folder:
            parser.error(f"write NAME=FOLDER, got {item!r}")
        runs[name] = outcomes(Path(folder))
    reference = args.reference or next(iter(runs))
    shared = sorted(set.intersection(*(set(r) for r in runs.values())))
    off = [key for key in shared if key[0] != key[1]]
    off_no_en = [key for key in off if key[1] != "en"]
    print(f"{len(shared)} prompts answered by every run, {len(off)} off-diagonal.\n")
    print("| run | off-diagonal success % | off-diag., target ≠ en | degenerate % (off-diag.) | mean answer words |")
    print("|:---|---:|---:|---:|---:|")
    for name, samples in runs.items():
        words = sum(len(samples[k]["filtered_resps"][0].split()) for k in off) / max(len(off), 1)
        print(f"| {name} | {rate([samples[k] for k in off])} | {rate([samples[k] for k in off_no_en])} | "
              f"{rate([samples[k] for k in off], 'degenerate_rate')} | {words:.1f} |")
    targets = family_ordered({key[1] for key in off})
    print("\nOff-diagonal success % per target language:\n")
    print("| run | " + " | ".join(targets) + " |")
    print("|:---|" + "---:|" * len(targets))
    for name, samples in runs.items():
        cells = [rate([samples[k] for k in off if k[1] == target]) for target in targets]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nExact McNemar tests against {reference} on the {len(off)} off-diagonal prompts:\n")
    print("| run | only the run succeeds | only the reference succeeds | p |")
    print("|:---|---:|---:|---:|")
    success = {name: [float(samples[k][SUCCESS]) > 0 for k in off] for name, samples in runs.items()}
    for name in runs:
        if name != reference:
            test = mcnemar_exact(success[name], success[reference])
            print(f"| {name} | {test.only_a} | {test.only_b} | {test.p_value:.2g} |")


if __name__ == "__main__":
    main()
