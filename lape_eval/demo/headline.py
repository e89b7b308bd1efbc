"""The demo's headline numbers: a forcing run's off-diagonal success, with and without English as
the target, each with its Wilson 95 % interval.

Success is the demo's forcing metric, ``target_rate_clean``: a non-degenerate answer that language
identification assigns to the target language. English is reported apart because a base model that
drifts into English succeeds "for free" whenever English is the target.
"""

from __future__ import annotations

from pathlib import Path

from lape_eval.reports.results import RESULTS_GLOB, load_runs
from lape_eval.reports.significance import wilson_interval

FORCING_TASK = "lape_forcing_grid"
SUCCESS = "target_rate_clean"
SCOPES = {
    "offdiag": lambda doc: doc["source_lang"] != doc["target_lang"],
    "offdiag_no_en": lambda doc: doc["source_lang"] != doc["target_lang"] and doc["target_lang"] != "en",
}


def forcing_headline(folder: Path) -> dict | None:
    """``{scope: {rate, low, high, successes, n}}`` (percentages) of the newest run under ``folder``,
    from its logged samples; None when the folder has no run with samples of the forcing grid."""
    if not any(folder.rglob(RESULTS_GLOB)):
        return None
    runs = sorted(load_runs([folder]), key=lambda run: run.path.name)
    samples = runs[-1].samples(FORCING_TASK) if runs else None
    if not samples:
        return None
    headline = {}
    for scope, keep in SCOPES.items():
        kept = [sample for sample in samples if keep(sample["doc"])]
        interval = wilson_interval(sum(1 for sample in kept if float(sample[SUCCESS]) > 0), len(kept))
        headline[scope] = {"rate": 100 * interval.rate, "low": 100 * interval.low, "high": 100 * interval.high,
                           "successes": interval.successes, "n": interval.n}
    return headline


def headline_line(name: str, headline: dict) -> str:
    """``name: 69.8 % [65.2, 73.9] of 420 off-diagonal answers; 64.7 % [...] without English as target``."""
    def part(scope: str) -> str:
        h = headline[scope]
        return f"{h['rate']:.1f} % [{h['low']:.1f}, {h['high']:.1f}] of {h['n']}"

    return (f"{name}: {part('offdiag')} off-diagonal answers; {part('offdiag_no_en')} without English as "
            "the target")
