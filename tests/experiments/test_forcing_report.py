"""The forcing report's statistics on hand-made answers (counts and claims checked by hand)."""

from __future__ import annotations

import pytest
from scipy import stats

from lape_eval.experiments import forcing_report as fr

SET = "set-1pct"


def answers(cond, hits, neuron_set=SET):
    """Answers of one arm on the grid en,de x en,de x questions q1..q3; ``hits``: the (source, target,
    question) keys answered in the target language."""
    return [fr.Answer(cond, neuron_set, s, t, q, (s, t, q) in hits, False, t, "x" * (len(s + t + q)))
            for s in ("en", "de") for t in ("en", "de") for q in ("q1", "q2", "q3")]


ALL = {(s, t, q) for s in ("en", "de") for t in ("en", "de") for q in ("q1", "q2", "q3")}
DIAG = {k for k in ALL if k[0] == k[1]}


def test_rates_scopes_and_paired_counts_by_hand():
    act = answers("act", DIAG | {("en", "de", "q1")})  # 6 diagonal + 1 off-diagonal of 12
    deact = answers("deact_act", DIAG | {("en", "de", "q1"), ("en", "de", "q2"), ("de", "en", "q1"),
                                         ("de", "en", "q2"), ("de", "en", "q3")})  # 6 + 5
    base = answers("baseline", DIAG, neuron_set=fr.BASELINE_SET)
    items = act + deact + base
    assert fr.proportion(fr.of_arm(items, "deact_act", SET), "pooled").successes == 11
    assert fr.proportion(fr.of_arm(items, "deact_act", SET), "offdiag").n == 6
    no_en = fr.proportion(fr.of_arm(items, "deact_act", SET), "offdiag_no_en")
    assert (no_en.successes, no_en.n) == (2, 3)  # en->de only
    assert fr.proportion(fr.of_arm(items, "act", SET), "diag").rate == 1.0
    results = fr.comparisons(items)
    found = fr._find(results, "deact_act", "act", SET, "pooled")
    assert (found.test.n, found.test.only_a, found.test.only_b) == (12, 4, 0)
    assert found.test.p_value == pytest.approx(stats.binomtest(0, 4, 0.5).pvalue)
    versus_base = fr._find(results, "deact_act", "baseline", SET, "offdiag")
    assert (versus_base.test.n, versus_base.test.only_a, versus_base.test.only_b) == (6, 5, 0)
    lines = fr.claim_lines(results)
    assert lines[0].startswith("- ✓ **deactivate + activate ≥ activate-only** (set-1pct): holds on this model, "
                               "91.7 % vs 58.3 % (pooled, n = 12), p = 0.125")
    assert any("forces the target language" in line and "holds" in line for line in lines)


def test_a_claim_that_fails_says_so():
    act = answers("act", ALL)
    repl = answers("repl", DIAG)
    lines = fr.claim_lines(fr.comparisons(act + repl))
    assert lines == [line for line in lines if "additive > replacement (activate-only)" in line]
    assert "holds on this model" in lines[0]
    lines = fr.claim_lines(fr.comparisons(answers("act", DIAG) + answers("repl", ALL)))
    assert lines[0].startswith("- ✗ **additive > replacement (activate-only)** (set-1pct): does not hold on this model")


def test_tables_render_every_arm_with_intervals():
    items = answers("act", DIAG) + answers("baseline", set(), neuron_set=fr.BASELINE_SET)
    text = fr.render(fr.rates_table(items), "markdown")
    assert "baseline (unsteered)" in text and "activate-only (+tgt)" in text
    assert "50.0 [" in text  # pooled 6/12 with its Wilson interval
    per_target = fr.per_language_rows(items, "target")
    assert per_target[0] == ["en", "de"] and per_target[2][("de", "act · set-1pct")].successes == 3
    low, high = fr.mean_interval([1.0, 3.0])[1:]
    # mean 2, sd √2, n 2: 2 ± 1.96·1 (hand formula; rounding only)
    assert (low, high) == pytest.approx((2 - fr.Z_95, 2 + fr.Z_95), abs=1e-12)


def judged(items, ratings):
    """``items`` with a judgment each: ``ratings`` maps (source, target) to the rating (None: unparsed)."""
    from dataclasses import replace

    from lape_eval.reports.relevance import Judgment

    return [replace(a, judgment=Judgment(0, a.source, a.target, "k", "scripted", ratings[(a.source, a.target)],
                                         "", False)) for a in items]


def test_steering_score_section_by_hand(tmp_path):
    ratings = {("en", "en"): 2, ("en", "de"): 1, ("de", "en"): None, ("de", "de"): 0}
    items = judged(answers("act", DIAG | {("en", "de", "q1")}), ratings)  # 7 of 12 in the target language
    scores = fr.arm_scores(items)[("act", SET)]
    lfs = 100 * 7 / 12
    relevance = 100 * (3 * 2 + 3 * 1 + 3 * 0) / (9 * 2)  # de->en unparsed: left out
    assert scores.overall.lfs == pytest.approx(lfs, abs=1e-12)
    assert scores.overall.relevance == pytest.approx(relevance, abs=1e-12)
    assert scores.overall.steering == pytest.approx(2 * lfs * relevance / (lfs + relevance), abs=1e-12)
    # per target de: LFS 4/6 (en->de q1 and the 3 de->de), ratings 1,1,1,0,0,0
    de = scores.target["de"]
    want_lfs, want_rel = 100 * 4 / 6, 100 * 3 / 12
    assert (de.lfs, de.relevance) == pytest.approx((want_lfs, want_rel), abs=1e-12)
    assert de.steering == pytest.approx(2 * want_lfs * want_rel / (want_lfs + want_rel), abs=1e-12)
    # per source de: ratings None x3 and 0 x3 -> relevance 0 -> steering 0 (CLaS's harmonic mean)
    assert scores.source["de"].relevance == 0.0 and scores.source["de"].steering == 0.0
    text = "\n".join(fr.steering_lines(items, tmp_path))
    assert f"| {scores.overall.lfs:.1f} | {relevance:.1f} | {scores.overall.steering:.1f} |" in text
    assert "3 replies without a parsable rating" in text


def test_steering_section_without_judgments_says_it_needs_a_judge(tmp_path):
    lines = fr.steering_lines(answers("act", DIAG), tmp_path)
    assert lines[0].startswith("Needs a judge") and f"lape-eval judge {tmp_path / 'runs'}" in lines[0]
