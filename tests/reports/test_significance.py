"""Δ and p-values of `lape-eval table` against computations made here from the recorded files
(paired bootstrap, sacrebleu's paired bootstrap, z-test)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recorded_runs import results_json, runs, samples, table_csv


class TestSignificance:
    """Δ and p of the table against computations made here from the files themselves."""

    def test_paired_bootstrap_matches_numpy(self):
        from lape_eval.reports.significance import DEFAULT_RESAMPLES, DEFAULT_SEED

        table = table_csv(*runs("base", "minus-en-plus-de"), "--baseline", "base", "--metric", "acc_norm",
                          "--tasks", "rep_mc_en")
        run = {s["doc_id"]: s["acc_norm"] for s in samples("minus-en-plus-de", "rep_mc_en")}
        base = {s["doc_id"]: s["acc_norm"] for s in samples("base", "rep_mc_en")}
        diffs = np.array([run[d] - base[d] for d in sorted(base)])
        rng = np.random.default_rng(DEFAULT_SEED)
        means = diffs[rng.integers(0, len(diffs), size=(DEFAULT_RESAMPLES, len(diffs)))].mean(axis=1)
        p = (1 + np.sum(np.abs(means - diffs.mean()) >= abs(diffs.mean()))) / (DEFAULT_RESAMPLES + 1)
        cell = table["-en +de"]
        assert cell["rep_mc_en test"] == "paired-bootstrap"
        assert float(cell["rep_mc_en delta"]) == pytest.approx(diffs.mean(), abs=1e-12)
        assert float(cell["rep_mc_en p"]) == pytest.approx(p, abs=1e-12)

    def test_group_without_samples_uses_a_z_test(self):
        table = table_csv(*runs("base", "plus-en"), "--baseline", "base", "--tasks", "rep_mc")
        a, b = results_json("plus-en")["results"]["rep_mc"], results_json("base")["results"]["rep_mc"]
        z = (a["acc,none"] - b["acc,none"]) / math.sqrt(a["acc_stderr,none"] ** 2 + b["acc_stderr,none"] ** 2)
        p = 2 * (1 - 0.5 * (1 + math.erf(abs(z) / math.sqrt(2))))
        assert table["+en"]["rep_mc test"] == "z-test"
        assert float(table["+en"]["rep_mc p"]) == pytest.approx(p, rel=1e-9)

    def test_chrf_uses_sacrebleu_paired_bootstrap(self, monkeypatch):
        from sacrebleu.metrics import CHRF
        from sacrebleu.significance import PairedTest

        table = table_csv(*runs("base", "lora"), "--baseline", "base", "--tasks", "rep_mt_en_de")
        base, lora = samples("base", "rep_mt_en_de"), samples("lora", "rep_mt_en_de")
        references = [[s["chrf"][0] for s in base]]
        monkeypatch.setenv("SACREBLEU_SEED", "12345")
        _, scores = PairedTest([("base", [s["chrf"][1] for s in base]), ("lora", [s["chrf"][1] for s in lora])],
                               {"chrF2": CHRF()}, references, test_type="bs", n_samples=1000)()
        cell = table["peft:lora-de"]
        assert cell["rep_mt_en_de test"] == "sacrebleu"
        assert float(cell["rep_mt_en_de p"]) == pytest.approx(scores["chrF2"][1].p_value)
        assert float(cell["rep_mt_en_de p"]) < 0.05  # LoRA's drop is significant: the † in the golden table

    def test_z_test_when_asked(self):
        table = table_csv(*runs("base", "lora"), "--baseline", "base", "--tasks", "rep_mt_en_de", "--test", "z")
        a, b = results_json("lora")["results"]["rep_mt_en_de"], results_json("base")["results"]["rep_mt_en_de"]
        se = math.hypot(a["chrf_stderr,none"], b["chrf_stderr,none"])
        assert float(table["peft:lora-de"]["rep_mt_en_de p"]) == pytest.approx(
            math.erfc(abs(a["chrf,none"] - b["chrf,none"]) / se / math.sqrt(2)))

    def test_bootstrap_in_blocks_equals_one_draw(self):
        from lape_eval.reports.significance import paired_bootstrap

        rng = np.random.default_rng(0)
        a, b = rng.random(5000), rng.random(5000) + 0.01
        diffs = a - b
        means = diffs[np.random.default_rng(7).integers(0, 5000, size=(2000, 5000))].mean(axis=1)
        expected = (1 + np.sum(np.abs(means - diffs.mean()) >= abs(diffs.mean()))) / 2001
        assert paired_bootstrap(a, b, 2000, 7) == pytest.approx(expected)

    def test_hypothesis_first_pairs_are_recognised(self):
        """lape-eval's own chrf_pp samples are (hypothesis, reference): the test finds the order."""
        from lape_eval.reports.significance import _sacrebleu_test
        from sacrebleu.metrics import CHRF

        refs = ["Der Hund schläft unter dem Tisch.", "Wo ist der Bahnhof?", "Ich hätte gern Kaffee."]
        hyp_a = ["Der Hund schläft.", "Wo ist Bahnhof?", "Kaffee bitte."]
        hyp_b = ["Hund Tisch", "Bahnhof", "Ich Kaffee."]
        score = lambda hyps: CHRF(word_order=2).corpus_score(hyps, [refs]).score  # noqa: E731
        pairs = lambda hyps: [((h,), (r,), None) for h, r in zip(hyps, refs)]  # noqa: E731
        p = _sacrebleu_test("chrf++", pairs(hyp_a), pairs(hyp_b), score(hyp_a), score(hyp_b), 200, 3)
        assert p is not None and 0 < p <= 1
        assert _sacrebleu_test("chrf++", pairs(hyp_a), pairs(hyp_b), score(hyp_a) + 1, score(hyp_b), 200, 3) is None


# --- Wilson intervals and the exact McNemar test, against scipy and hand-computed cases ----------------

from scipy import stats  # noqa: E402

from lape_eval.reports.significance import mcnemar_exact, mcnemar_p_value, wilson_interval  # noqa: E402


@pytest.mark.parametrize("successes, n", [(0, 1), (1, 1), (8, 10), (0, 54), (27, 54), (53, 54), (1, 2646), (900, 2646)])
def test_wilson_interval_equals_scipy(successes, n):
    expected = stats.binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    found = wilson_interval(successes, n)
    # Tolerance: the same closed form evaluated in another order (scipy takes z from norm.ppf): rounding only.
    assert found.low == pytest.approx(expected.low, abs=1e-12)
    assert found.high == pytest.approx(expected.high, abs=1e-12)
    assert found.rate == successes / n


def test_wilson_interval_hand_case_and_edges():
    # 8 of 10 by hand: (0.8 + 1.92/10 ± 1.96·sqrt(0.016 + 0.0096)) / 1.384 = [0.4902, 0.9433] (4 decimals printed).
    found = wilson_interval(8, 10)
    assert round(found.low, 4) == 0.4902 and round(found.high, 4) == 0.9433
    assert math.isnan(wilson_interval(0, 0).low)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


@pytest.mark.parametrize("only_a, only_b", [(0, 0), (0, 5), (5, 0), (3, 3), (12, 3), (1, 20), (40, 61), (300, 250)])
def test_mcnemar_exact_equals_scipy_binomial_test(only_a, only_b):
    expected = 1.0 if only_a + only_b == 0 else stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    # Tolerance: exact sums of binomial terms in both; they differ only in floating rounding.
    assert mcnemar_p_value(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_mcnemar_counts_discordant_pairs_only():
    a = [True, True, False, False, True, True, True, False]
    b = [True, False, False, True, False, False, False, False]
    result = mcnemar_exact(a, b)
    assert (result.n, result.only_a, result.only_b) == (8, 4, 1)
    assert result.p_value == pytest.approx(2 * (1 + 5) / 32)  # 2·P(X ≤ 1), X ~ Bin(5, ½), exact in binary
    with pytest.raises(ValueError):
        mcnemar_exact([True], [])
