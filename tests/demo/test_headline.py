"""The demo's headline: off-diagonal forcing success with and without English as target, with Wilson
95 % intervals computed by hand here."""

from __future__ import annotations

import json
import math

from lape_eval.demo.headline import forcing_headline, headline_line


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return 100 * (centre - half), 100 * (centre + half)


def _write_run(folder, samples: list[dict]) -> None:
    folder.mkdir(parents=True)
    date = "2025-01-01T00-00-00"
    (folder / f"results_{date}.json").write_text(json.dumps({"results": {"lape_forcing_grid": {}},
                                                             "config": {"model": "lape"}}), encoding="utf-8")
    with open(folder / f"samples_lape_forcing_grid_{date}.jsonl", "w", encoding="utf-8") as file:
        for sample in samples:
            file.write(json.dumps(sample) + "\n")


def _sample(source: str, target: str, success: bool) -> dict:
    return {"doc": {"source_lang": source, "target_lang": target}, "target_rate_clean": 100.0 if success else 0.0}


def test_rates_and_intervals_per_scope(tmp_path):
    samples = ([_sample("de", "en", True)] * 4  # English as target: 4 of 4 succeed
               + [_sample("en", "de", True)] * 3 + [_sample("en", "de", False)] * 5  # 3 of 8
               + [_sample("de", "de", True)] * 6)  # the diagonal counts in neither scope
    _write_run(tmp_path / "run" / "model", samples)
    headline = forcing_headline(tmp_path / "run")
    low, high = _wilson(7, 12)
    assert headline["offdiag"]["successes"] == 7 and headline["offdiag"]["n"] == 12
    assert math.isclose(headline["offdiag"]["rate"], 100 * 7 / 12)
    assert math.isclose(headline["offdiag"]["low"], low) and math.isclose(headline["offdiag"]["high"], high)
    low, high = _wilson(3, 8)
    assert (headline["offdiag_no_en"]["successes"], headline["offdiag_no_en"]["n"]) == (3, 8)
    assert math.isclose(headline["offdiag_no_en"]["low"], low) and math.isclose(headline["offdiag_no_en"]["high"], high)
    assert headline_line("steered", headline) == (
        f"steered: 58.3 % [{_wilson(7, 12)[0]:.1f}, {_wilson(7, 12)[1]:.1f}] of 12 off-diagonal answers; "
        f"37.5 % [{_wilson(3, 8)[0]:.1f}, {_wilson(3, 8)[1]:.1f}] of 8 without English as the target")


def test_a_run_without_samples_has_no_headline(tmp_path):
    folder = tmp_path / "run" / "model"
    folder.mkdir(parents=True)
    (folder / "results_2025-01-01T00-00-00.json").write_text(json.dumps({"results": {}, "config": {}}))
    assert forcing_headline(tmp_path / "run") is None
    assert forcing_headline(tmp_path / "nothing") is None
    (tmp_path / "empty").mkdir()  # a run that never finished
    assert forcing_headline(tmp_path / "empty") is None
