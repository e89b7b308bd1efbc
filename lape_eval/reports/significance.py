"""Is a score difference between two runs of the same task significant?

Three tests, the first that applies wins (:func:`compare`):

``paired-bootstrap``
    Both runs wrote sample files, the metric's per-sample values are numbers and the task's score is
    their mean (checked): paired bootstrap over the documents both runs scored (matched by
    ``doc_id`` and ``doc_hash``). With ``d_i`` the per-document differences and ``d̄`` their mean,
    ``B`` resamples of the documents (``numpy.random.default_rng(seed).integers(0, n, (B, n))``)
    give means ``d̄*_b``; ``p = (1 + #{|d̄*_b − d̄| ≥ |d̄|}) / (B + 1)`` (two-sided, the bootstrap
    distribution centred on the null).
``sacrebleu``
    Corpus metrics whose samples hold a reference and a hypothesis (lm-eval's ``bleu``, ``chrf``,
    ``chrf++``, ``ter``: ``[reference, hypothesis]``; lape-eval's ``chrf_pp``: ``[hypothesis,
    reference]`` and ``corpus_bleu``: ``[hypothesis, reference, tokenizer]``): sacrebleu's paired
    bootstrap test (``sacrebleu.significance.PairedTest(test_type="bs")``) on the hypotheses of both
    runs. Which element is the hypothesis is settled by recomputing the reported scores; when
    neither order reproduces them, the z-test is used.
``z-test``
    Otherwise, from the standard errors: ``z = Δ / sqrt(se_a² + se_b²)``, ``p = erfc(|z| / √2)``
    (assumes independent samples, so it is conservative for paired data). Without both standard
    errors there is no test.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import numpy as np

from lape_eval.reports.results import Run, Score

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 12345  # sacrebleu's default seed; a seed of 0 would make sacrebleu unseeded
TESTS = ("auto", "bootstrap", "z", "none")
_SACREBLEU_METRICS = {"bleu": "bleu", "corpus_bleu": "bleu", "sacrebleu": "bleu", "chrf": "chrf", "chrf++": "chrf++",
                      "chrfpp": "chrf++", "chrf_pp": "chrf++", "ter": "ter"}
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Comparison:
    delta: float
    p_value: float | None
    test: str | None  # "paired-bootstrap", "sacrebleu", "z-test" or None (no test possible)
    n: int | None = None  # documents paired (bootstrap tests)


def z_test(a: Score, b: Score) -> Comparison:
    delta = a.value - b.value
    if a.stderr is None or b.stderr is None:
        return Comparison(delta, None, None)
    se = math.hypot(a.stderr, b.stderr)
    if se == 0:
        return Comparison(delta, 1.0 if delta == 0 else 0.0, "z-test")
    return Comparison(delta, math.erfc(abs(delta) / se / math.sqrt(2)), "z-test")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = DEFAULT_RESAMPLES,
                     seed: int = DEFAULT_SEED) -> float:
    """Two-sided p-value of mean(a − b) = 0 by paired bootstrap (see the module docstring)."""
    diffs = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = diffs.size
    observed = diffs.mean()
    rng = np.random.default_rng(seed)
    extreme = 0
    rows = max(1, 4_000_000 // max(n, 1))  # resamples per block: bounded memory for large tasks
    for start in range(0, resamples, rows):
        indices = rng.integers(0, n, size=(min(rows, resamples - start), n))
        means = diffs[indices].mean(axis=1)
        extreme += int((np.abs(means - observed) >= abs(observed) - 1e-12).sum())
    return (1 + extreme) / (resamples + 1)


def compare(run: Run, baseline: Run, task: str, key: str, *, test: str = "auto",
            resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
            scores: tuple | None = None) -> Comparison | None:
    """Δ = run − baseline on ``task``/``key`` and its p-value; None when either score is missing.
    ``scores``: the two :class:`Score` objects when the caller already has them."""
    a, b = scores if scores is not None else (run.score(task, key), baseline.score(task, key))
    if a is None or b is None:
        return None
    if test == "none":
        return Comparison(a.value - b.value, None, None)
    if test in ("auto", "bootstrap"):
        paired = _paired_values(run, baseline, task, key)
        if paired is not None:
            kind, values_a, values_b = paired
            if kind == "numeric" and _close(np.mean(values_a), a.value) and _close(np.mean(values_b), b.value):
                return Comparison(a.value - b.value, paired_bootstrap(values_a, values_b, resamples, seed),
                                  "paired-bootstrap", len(values_a))
            if kind != "numeric":
                result = _sacrebleu_test(kind, values_a, values_b, a.value, b.value, resamples, seed)
                if result is not None:
                    return Comparison(a.value - b.value, result, "sacrebleu", len(values_a))
    return z_test(a, b)


def _close(x: float, y: float) -> bool:
    return abs(x - y) <= _TOLERANCE * max(1.0, abs(y))


def _per_document(run: Run, task: str, key: str) -> dict | None:
    samples = run.samples(task)
    if not samples:
        return None
    metric, _, filter_name = key.partition(",")
    values = {}
    for record in samples:
        if record.get("filter", "none") != filter_name or metric not in record:
            continue
        values[(record.get("doc_id"), record.get("doc_hash"))] = record[metric]
    return values or None


def _paired_values(run: Run, baseline: Run, task: str, key: str):
    """("numeric" | sacrebleu metric name, values of run, values of baseline) over shared documents."""
    mine, theirs = _per_document(run, task, key), _per_document(baseline, task, key)
    if mine is None or theirs is None:
        return None
    shared = [doc for doc in mine if doc in theirs]
    if not shared or len(shared) != len(mine) or len(shared) != len(theirs):
        return None  # different documents (e.g. another --limit): the scores are not paired
    values_a = [mine[doc] for doc in shared]
    values_b = [theirs[doc] for doc in shared]
    if all(_is_number(v) for v in values_a + values_b):
        return "numeric", np.array(values_a, dtype=np.float64), np.array(values_b, dtype=np.float64)
    corpus = _SACREBLEU_METRICS.get(key.partition(",")[0].lower())
    if corpus:
        pairs_a, pairs_b = [_pair(v) for v in values_a], [_pair(v) for v in values_b]
        if all(p is not None for p in pairs_a + pairs_b):
            return corpus, pairs_a, pairs_b
    return None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _pair(value) -> tuple[tuple[str, ...], str, str | None] | None:
    """A pass-through sample value as (first, second, tokenizer): ``[a, b]`` or ``[a, b, tokenizer]``
    where a and b are a text and a text or list of texts (the references)."""
    if not isinstance(value, list) or len(value) not in (2, 3):
        return None
    first, second = ([x] if isinstance(x, str) else x for x in value[:2])
    tokenizer = value[2] if len(value) == 3 else None
    if not isinstance(first, list) or not isinstance(second, list) or not first or not second \
            or not all(isinstance(x, str) for x in first + second) or not isinstance(tokenizer, (str, type(None))):
        return None
    return tuple(first), tuple(second), tokenizer


def _sacrebleu_metric(name: str, tokenizer: str | None = None):
    from sacrebleu.metrics import BLEU, CHRF, TER

    if name == "bleu":
        return BLEU(tokenize=tokenizer) if tokenizer else BLEU()
    return {"chrf": CHRF, "chrf++": lambda: CHRF(word_order=2), "ter": TER}[name]()


@contextlib.contextmanager
def _sacrebleu_seed(seed: int):
    previous = os.environ.get("SACREBLEU_SEED")
    os.environ["SACREBLEU_SEED"] = str(seed)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SACREBLEU_SEED", None)
        else:
            os.environ["SACREBLEU_SEED"] = previous


def _sacrebleu_test(name: str, pairs_a, pairs_b, score_a: float, score_b: float, resamples: int,
                    seed: int) -> float | None:
    """p-value of sacrebleu's paired bootstrap test, or None when the samples do not reproduce the scores."""
    tokenizers = {tok for _, _, tok in pairs_a + pairs_b}
    if len(tokenizers) != 1:
        return None
    tokenizer = tokenizers.pop()
    for hyp_at in (1, 0):  # lm-eval: [reference, hypothesis]; lape-eval's own metrics: [hypothesis, reference]
        ref_at = 1 - hyp_at
        per_document = [pair[ref_at] for pair in pairs_a]
        hyps = [[pair[hyp_at] for pair in pairs] for pairs in (pairs_a, pairs_b)]
        if per_document != [pair[ref_at] for pair in pairs_b] or len({len(r) for r in per_document}) != 1 \
                or any(len(h) != 1 for hs in hyps for h in hs):
            continue
        references = [list(stream) for stream in zip(*per_document)]  # sacrebleu: one list per reference stream
        hyps_a, hyps_b = ([h[0] for h in hs] for hs in hyps)
        metric = _sacrebleu_metric(name, tokenizer)
        if not (_close(metric.corpus_score(hyps_a, references).score, score_a)
                and _close(metric.corpus_score(hyps_b, references).score, score_b)):
            continue
        return sacrebleu_paired_p(name, hyps_a, hyps_b, references, tokenizer, resamples, seed)
    return None


# --------------------------------------------------------------------------------------------------
# Proportions: Wilson intervals and the exact McNemar test (paired success / failure outcomes)

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile: two-sided 95 %


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``n`` with its Wilson score interval (fractions in [0, 1]; NaN for n = 0)."""

    successes: int
    n: int
    low: float
    high: float

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else float("nan")


def wilson_interval(successes: int, n: int, z: float = Z_95) -> Proportion:
    """The Wilson score interval of a binomial proportion (Wilson 1927):
    ``(p̂ + z²/2n ± z·sqrt(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Proportion(0, 0, float("nan"), float("nan"))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Proportion(successes, n, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class McNemar:
    """Paired binary outcomes of A and B on the same items: ``only_a`` items A got right and B wrong,
    ``only_b`` the reverse; ``p_value`` of the exact (binomial) McNemar test."""

    n: int  # items paired
    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(a: list[bool], b: list[bool]) -> McNemar:
    """The exact McNemar test: under H0 the discordant pairs split 50/50, so
    ``p = min(1, 2 · P(X ≤ min(only_a, only_b)))`` with ``X ~ Binomial(only_a + only_b, 1/2)``."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes of different lengths: {len(a)} and {len(b)}")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    return McNemar(len(a), only_a, only_b, mcnemar_p_value(only_a, only_b))


def mcnemar_p_value(only_a: int, only_b: int) -> float:
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)

def corpus_metric_name(metric: str) -> str | None:
    """sacrebleu's name (``bleu``, ``chrf``, ``chrf++``, ``ter``) of a corpus metric key, else None."""
    return _SACREBLEU_METRICS.get(metric.partition(",")[0].lower())


def sacrebleu_paired_p(name: str, hyps_a: list[str], hyps_b: list[str], references: list[list[str]],
                       tokenizer: str | None = None, resamples: int = DEFAULT_RESAMPLES,
                       seed: int = DEFAULT_SEED) -> float:
    """p-value of sacrebleu's paired bootstrap test (``PairedTest(test_type="bs")``) of system ``a`` against
    baseline ``b`` on corpus metric ``name`` (``bleu``, ``chrf``, ``chrf++``, ``ter``); ``references``: one
    list per reference stream, as sacrebleu takes them."""
    from sacrebleu.significance import PairedTest

    with _sacrebleu_seed(seed):
        test = PairedTest([("baseline", list(hyps_b)), ("run", list(hyps_a))],
                          {name: _sacrebleu_metric(name, tokenizer)}, references, test_type="bs",
                          n_samples=resamples)
        _, scores = test()
    result = next(values for metric_name, values in scores.items() if metric_name != "System")[1]
    return float(result.p_value)
