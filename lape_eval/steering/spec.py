"""The steer-spec language: ``"-en +de:0.5"`` with its method, strengths and positions.

A steer spec reads like arithmetic on languages: ``"-en +de"`` deactivates English's neurons and
activates German's. Each ``+`` term uses the spec's ``method``, an operator on the gated activation
g of the language's neurons:

==========  ======================================================  =====================
method      update on the neurons of the ``+`` language, per token  strength
==========  ======================================================  =====================
add         g ← g + α·μ(lang)                      (the paper)     ``alpha`` (≥ 0)
multiply    g ← β·g                                                 ``beta``
replace     g ← α·μ(lang)                     (Tang-style; α = 1)   ``alpha``
diffmean    g ← g + α·(μ(lang) − mean of μ over the other languages) ``alpha``
==========  ======================================================  =====================

One method steers the residual stream instead of neurons, with a direction artifact
(:mod:`lape_eval.neurons.directions`) rather than a neuron set:

``residual_diffmean`` (CLaS-Bench's DiffMean, method spec §9.2): ``"-src +tgt"`` adds
α · normalise(m(tgt) − m(src)) to the output of ONE chosen decoder layer at every position, m being
the mean residual-stream vector of a language at that layer. ``"+tgt"`` alone subtracts the mean of m
over the artifact's other languages instead. A spec has one ``+`` term and at most one ``-`` term (the
source: subtracted, not deactivated, so it takes no strength); the ``+`` term's strength is α
(``alpha``, ``+tgt:α`` or ``language_alphas``). Steering itself is :mod:`lape_eval.steering.residual`.

A ``-`` term sets the language's neurons to ``deactivate_value`` (c, default 0). Deactivations are
applied first, then activations in the order written, at every layer the neuron set covers (method
spec §1, §5). μ is the set's mean activation of those neurons on each language's corpus. A term can
carry its own strength: ``"-en +zh:0.5"`` (α = 0.5 for zh; for ``-`` terms, the constant c), and
``language_alphas`` gives per-language defaults (``"zh:0.5 de:1.5"``, a dict, or a JSON file: a
calibration from ``lape-eval calibrate``, see :mod:`lape_eval.steering.calibration`, or a plain
``{lang: α}`` object).

``positions`` chooses the tokens that are edited: ``all`` (the paper), ``prompt`` (tokens of the
input), ``generated`` (tokens produced by generation), ``answer`` (the tokens whose next-token
prediction is the answer: the prompt's last token and the generated ones; with ``generated`` the first
answer token is still predicted unsteered, which often starts the answer in the prompt's language).
On a scored (context, continuation) pair the context plays the prompt and the continuation the
generated tokens (:mod:`lape_eval.evaluation.lm`).

Parsing is string handling only (no torch import), so reports and plots can read the specs that
runs recorded without loading a tensor library. :mod:`lape_eval.steering.hooks` compiles a spec
against a neuron set and applies it to a model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from lape_eval.errors import LapeEvalError
from lape_eval.languages import get_language
from lape_eval.steering.calibration import read_language_alphas

RESIDUAL_DIFFMEAN = "residual_diffmean"  # the residual-stream method (a direction artifact, one layer)
METHODS = ("add", "multiply", "replace", "diffmean", RESIDUAL_DIFFMEAN)
POSITIONS = ("all", "prompt", "generated", "answer")


@dataclass(frozen=True)
class SteerTerm:
    sign: str  # "-" deactivate, "+" activate
    language: str
    strength: float | None = None  # per-term α / β / c, overriding the spec's default

    def __str__(self) -> str:
        return f"{self.sign}{self.language}" + ("" if self.strength is None else f":{self.strength:g}")


@dataclass(frozen=True)
class SteerSpec:
    terms: tuple[SteerTerm, ...] = ()
    method: str = "add"
    alpha: float = 1.0
    beta: float = 1.0
    deactivate_value: float = 0.0
    positions: str = "all"
    language_alphas: tuple[tuple[str, float], ...] = ()  # per-language α for '+' terms without a strength

    def strength_of(self, term: SteerTerm) -> float:
        """The α, β or c that ``term`` uses."""
        if term.strength is not None:
            return term.strength
        if term.sign == "-":
            return self.deactivate_value
        if self.method == "multiply":
            return self.beta
        return dict(self.language_alphas).get(term.language, self.alpha)

    @property
    def is_identity(self) -> bool:
        return not self.terms

    @property
    def deactivated(self) -> list[str]:
        return [t.language for t in self.terms if t.sign == "-"]

    @property
    def activated(self) -> list[str]:
        return [t.language for t in self.terms if t.sign == "+"]

    def describe(self) -> dict:
        """Everything needed to reproduce the run (goes into lm-eval's results JSON)."""
        return {"steer": " ".join(map(str, self.terms)) or "none", "method": self.method, "alpha": self.alpha,
                "beta": self.beta, "deactivate_value": self.deactivate_value, "positions": self.positions,
                "language_alphas": dict(self.language_alphas)}

    def __str__(self) -> str:
        return self.describe()["steer"]


# A term: sign, language code, optional strength ("-en", "+de", "+zh:0.5", "-en:-1.5").
_TERM = re.compile(r"\s*,?\s*([+-])([A-Za-z]{2,3})(?::([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?))?(?=[\s,+-]|$)")


def parse_steer(
    text: str | None,
    *,
    method: str = "add",
    alpha: float | str = 1.0,
    beta: float | str = 1.0,
    deactivate_value: float | str = 0.0,
    positions: str = "all",
    language_alphas: str | dict | None = None,
) -> SteerSpec:
    """Parse ``"-en +de"`` (terms separated by spaces or commas) and check every argument."""
    method = str(method).strip().lower()
    if method not in METHODS:
        raise LapeEvalError(f"Unknown steering method {method!r}: choose one of {', '.join(METHODS)} "
                            f"(the neuron methods apply to the '+' terms and '-' terms deactivate; {RESIDUAL_DIFFMEAN} "
                            "adds mean(+target) − mean(-source) to one layer's residual stream).")
    positions = str(positions).strip().lower()
    if positions not in POSITIONS:
        raise LapeEvalError(f"Unknown positions {positions!r}: choose all (every token, the paper), prompt "
                            "(input tokens only), generated (generated tokens only) or answer (the prompt's last "
                            "token and the generated tokens).")
    alpha = _number("alpha", alpha, minimum=0.0)
    beta = _number("beta", beta)
    deactivate_value = _number("deactivate_value", deactivate_value)
    terms: list[SteerTerm] = []
    text = (text or "").strip()
    position = 0
    while text.lower() not in ("", "none") and position < len(text.rstrip()):
        match = _TERM.match(text, position)
        if not match:
            raise LapeEvalError(_term_error(text, position))
        sign, code, strength = match.groups()
        code = get_language(code).code  # canonical (slk -> sk); unknown codes: the error lists near matches
        if any(t.language == code and t.sign == sign for t in terms):
            raise LapeEvalError(f"The steer spec names '{sign}{code}' twice: write each term once.")
        value = None
        if strength is not None:
            value = _number(f"the strength of {sign}{code}", strength,
                            minimum=0.0 if sign == "+" and method != "multiply" else None)
        terms.append(SteerTerm(sign, code, value))
        position = match.end()
    if method == RESIDUAL_DIFFMEAN:
        _check_residual_terms(text, terms)
    return SteerSpec(tuple(terms), method, alpha, beta, deactivate_value, positions,
                     _parse_language_alphas(language_alphas))


def _check_residual_terms(text: str, terms: list[SteerTerm]) -> None:
    """residual_diffmean adds one direction, target minus source: one '+' term, at most one '-' term."""
    plus = [t for t in terms if t.sign == "+"]
    minus = [t for t in terms if t.sign == "-"]
    if terms and (len(plus) != 1 or len(minus) > 1):
        raise LapeEvalError(
            f"method={RESIDUAL_DIFFMEAN} steers along one direction, mean(target) − mean(source): write one '+' "
            f"term (the target) and at most one '-' term (the source), e.g. '-en +de' or '+de' (got {text!r})."
        )
    if minus and minus[0].strength is not None:
        raise LapeEvalError(
            f"method={RESIDUAL_DIFFMEAN}: the source term '{minus[0]}' is subtracted from the target's mean, not "
            f"deactivated, so it takes no strength; give the strength on the target ('-{minus[0].language} "
            f"+{plus[0].language}:{minus[0].strength:g}') or as alpha."
        )


def _parse_language_alphas(value: str | dict | None) -> tuple[tuple[str, float], ...]:
    """``"zh:0.5 de:1.5"``, a dict, or a JSON file holding such a dict (e.g. a calibration's output)."""
    if value is None or value == "" or value == {}:
        return ()
    if isinstance(value, str) and value.endswith(".json"):  # a `lape-eval calibrate` output, or {lang: α}
        value = read_language_alphas(value)
    if isinstance(value, str):
        pairs = []
        for item in value.replace(",", " ").split():
            code, sep, number = item.partition(":")
            if not sep:
                raise LapeEvalError(f"language_alphas: write LANG:ALPHA pairs, e.g. 'zh:0.5 de:1.5' (got {item!r}).")
            pairs.append((code, number))
        value = dict(pairs)
    if not isinstance(value, dict):
        raise LapeEvalError("language_alphas must be 'LANG:ALPHA ...', a dict, or a .json file holding a dict.")
    return tuple((get_language(code).code, _number(f"language_alphas[{code}]", alpha, minimum=0.0))
                 for code, alpha in sorted(value.items()))


def _term_error(text: str, position: int) -> str:
    rest = text[position:].strip(" ,").split()[0]
    if rest.isalpha():
        hint = f"a language needs a sign: '-{rest}' deactivates its neurons, '+{rest}' activates them"
    else:
        hint = "each term is -LANG or +LANG, optionally with a strength: +LANG:NUMBER"
    return (f"Cannot read the steer spec {text!r} at {rest!r}: {hint}. Example: steer='-en +de' deactivates "
            "English and activates German; steer='-en +zh:0.5' activates Chinese with strength 0.5.")


def _number(name: str, value, minimum: float | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LapeEvalError(f"{name} must be a number (got {value!r}).") from None
    if not math.isfinite(number):
        raise LapeEvalError(f"{name} must be a finite number (got {value!r}).")
    if minimum is not None and number < minimum:
        raise LapeEvalError(
            f"{name} must be ≥ {minimum:g} (got {number:g}). To push a language away, deactivate it with "
            "'-LANG' (and deactivate_value), or use method=multiply with a negative beta."
        )
    return number
