"""The calibration file: the steering setting a calibration chose, a strength per target, and every rate.

``lape-eval calibrate`` (:mod:`lape_eval.evaluation.calibration_sweep`) measures, for every
candidate setting (neuron set × method × positions, or residual direction artifact × positions ×
layer) and strength α, how often steering
"-source +target" makes the model answer in the target language. This module is the file it
writes, read back by the ``lape`` model (``language_alphas=FILE.json``, through
:mod:`lape_eval.steering.spec`) and by ``lape-eval demo`` (the chosen set, method and positions).
It imports no torch, so that parsing a steer spec stays light.

Selection rule: per setting, each target keeps its best α (ties: the smallest, the gentlest edit);
the setting with the highest mean of those per-target rates wins (ties: the setting listed first,
the caller lists its default first).

The JSON (keys in this order)::

    model                 the model calibrated (what the user named)
    language_alphas       {target: α} of the chosen setting       <- what language_alphas=FILE reads
    chosen                {"neuron_set", "method", "positions", "layer"}   <- what the demo steers with
                          (neuron_set names the direction artifact and layer its decoder layer for
                          method residual_diffmean; layer is null for the neuron methods)
    content_hash          of the chosen setting's neuron set (or direction artifact)
    calibration_rate      the chosen setting's mean of per-target best rates (%)
    sources, targets      prompt and target languages
    alphas_tried          the candidate strengths
    questions_per_source  calibration questions asked per source language
    settings              [{"neuron_set", "method", "positions", "layer", "score"}] in sweep order
    rates                 {setting key: {target: {"α": success %}}}

Only ``language_alphas`` and ``chosen`` are required when reading; the rest describes the sweep.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lape_eval.errors import LapeEvalError
from lape_eval.files import read_json, write_json

WHAT = "calibration file"


@dataclass(frozen=True)
class Setting:
    """One point of the sweep apart from α."""

    neuron_set: str  # the neuron set, or the direction artifact for method residual_diffmean
    method: str = "add"
    positions: str = "all"
    layer: int | None = None  # residual_diffmean: the decoder layer whose output is steered

    @property
    def key(self) -> str:
        layer = "" if self.layer is None else f" layer={self.layer}"
        return f"{self.neuron_set} method={self.method} positions={self.positions}{layer}"

    def to_json(self) -> dict:
        """The setting's fields; ``layer`` only where there is one (neuron calibrations keep their shape)."""
        return {key: value for key, value in asdict(self).items() if key != "layer" or value is not None}


@dataclass
class Calibration:
    """A calibration result; :meth:`choose` applies the selection rule to ``rates``."""

    settings: list[Setting]
    sources: list[str]
    targets: list[str]
    alphas_tried: list[float]
    questions_per_source: int
    rates: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # setting key -> target -> α -> %
    chosen: Setting | None = None
    content_hash: str = ""  # of the chosen setting's neuron set
    language_alphas: dict[str, float] = field(default_factory=dict)  # target -> chosen α (for the chosen setting)
    calibration_rate: float | None = None  # the chosen setting's score
    model: str = ""

    def score(self, setting: Setting) -> float:
        """Mean over targets of each target's best rate under ``setting``."""
        by_target = self.rates[setting.key]
        return sum(max(by_alpha.values()) for by_alpha in by_target.values()) / max(len(by_target), 1)

    def choose(self) -> None:
        """Pick the winning setting and each target's α in it (see the module doc)."""
        # Highest score; on ties the setting listed first (the caller lists the default first).
        self.chosen = max(self.settings, key=lambda s: (self.score(s), -self.settings.index(s)))
        self.language_alphas = {target: best_alpha(by_alpha) for target, by_alpha in self.rates[self.chosen.key].items()}
        self.calibration_rate = self.score(self.chosen)

    def to_json(self) -> dict:
        return {"model": self.model, "language_alphas": self.language_alphas,
                "chosen": self.chosen.to_json() if self.chosen else None, "content_hash": self.content_hash,
                "calibration_rate": self.calibration_rate, "sources": self.sources, "targets": self.targets,
                "alphas_tried": self.alphas_tried, "questions_per_source": self.questions_per_source,
                "settings": [{**s.to_json(), "score": self.score(s)} for s in self.settings], "rates": self.rates}


def best_alpha(rates_by_alpha: dict[str, float]) -> float:
    """The α with the highest success rate; on ties the smallest (the gentlest intervention)."""
    return min((-rate, float(alpha)) for alpha, rate in rates_by_alpha.items())[1]


# --- the file ---------------------------------------------------------------------------------


def write_calibration(path: Path | str, calibration: Calibration) -> None:
    """Write ``calibration`` as JSON, atomically (an interrupted write leaves no half file)."""
    if calibration.chosen is None:
        raise ValueError("write_calibration needs a calibration whose setting was chosen (call choose()).")
    write_json(Path(path), calibration.to_json())


def read_calibration(path: Path | str) -> Calibration:
    """Read a calibration file; a clear :class:`LapeEvalError` for missing, damaged or other files."""
    data = read_json(Path(path), WHAT)
    if not is_calibration(data):
        raise LapeEvalError(_not_a_calibration(path, "it has no 'language_alphas' object"))
    try:
        return _from_json(data)
    except KeyError as error:
        raise LapeEvalError(_not_a_calibration(path, f"a setting has no field {error}")) from None
    except (TypeError, ValueError, AttributeError) as error:
        raise LapeEvalError(_not_a_calibration(path, str(error))) from None


def read_language_alphas(path: Path | str) -> dict:
    """What ``language_alphas=FILE.json`` reads: a calibration's ``language_alphas``, or a JSON object
    ``{lang: α}`` written by hand. The values are checked by the caller (the steer-spec parser)."""
    data = read_json(Path(path), "language_alphas file")
    if is_calibration(data):
        return dict(data["language_alphas"])
    if not isinstance(data, dict):
        raise LapeEvalError(f"The language_alphas file {path} must hold a JSON object {{\"de\": 1.5, ...}} "
                            "or be a `lape-eval calibrate` output.")
    return data


def is_calibration(data) -> bool:
    """Whether decoded JSON looks like a calibration (it carries a ``language_alphas`` object)."""
    return isinstance(data, dict) and isinstance(data.get("language_alphas"), dict)


def _from_json(data: dict) -> Calibration:
    chosen = data.get("chosen")
    if not isinstance(chosen, dict) or "neuron_set" not in chosen:
        raise ValueError("it has no 'chosen' setting with a neuron_set, method and positions")
    alphas = {str(lang): _number(alpha, f"language_alphas[{lang}]") for lang, alpha in data["language_alphas"].items()}
    rate = data.get("calibration_rate")
    return Calibration(
        settings=[Setting(s["neuron_set"], s["method"], s["positions"], _layer(s.get("layer")))
                  for s in data.get("settings", [])],
        sources=list(data.get("sources", [])), targets=list(data.get("targets", [])),
        alphas_tried=[_number(a, "alphas_tried") for a in data.get("alphas_tried", [])],
        questions_per_source=int(data.get("questions_per_source", 0)), rates=dict(data.get("rates", {})),
        chosen=Setting(str(chosen["neuron_set"]), str(chosen.get("method", "add")), str(chosen.get("positions", "all")),
                       _layer(chosen.get("layer"))),
        content_hash=str(data.get("content_hash", "")), language_alphas=alphas,
        calibration_rate=None if rate is None else _number(rate, "calibration_rate"), model=str(data.get("model", "")),
    )


def _layer(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a setting's layer is {json.dumps(value)}, not a layer number")
    return value


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is {json.dumps(value)}, not a number")
    return float(value)


def _not_a_calibration(path, problem: str) -> str:
    return (f"The {WHAT} {path} is not a lape-eval calibration ({problem}). Pass the JSON that "
            "`lape-eval calibrate --out FILE` wrote, or re-run the calibration.")
