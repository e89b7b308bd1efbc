"""The demo's steps in order (see :mod:`lape_eval.demo`), each a real command, and its summary."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lape_eval.demo.plan import (
    CALIBRATION_ALPHAS,
    CALIBRATION_METHODS,
    CALIBRATION_POSITIONS,
    SET_NAME,
    TOP_RATES,
    DemoPlan,
)
from lape_eval.demo.headline import forcing_headline, headline_line
from lape_eval.demo.step_runner import output_to_log, run_step
from lape_eval.files import write_json
from lape_eval.models import DEMO_MODEL
from lape_eval.reports.results import RESULTS_GLOB, read_results
from lape_eval.steering.calibration import read_calibration


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

    if plan.live is not None:  # the first use dequantises the GGUF: say what is happening meanwhile
        plan.live.write("▶ model: Gemma-3-270M from its PyPI package (cached as safetensors on first use) …")
        plan.live.flush()
    started = time.monotonic()
    with output_to_log(plan, plan.logs / "model.log"):  # the GGUF conversion's progress bars
        folder = ensure_demo_model_cached()
    if plan.live is not None:
        plan.live.write("\r\x1b[K")
    plan.say(f"✓ model: Gemma-3-270M from its PyPI package, cached in {folder}  ({time.monotonic() - started:.0f} s)")


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


FORCING_RUNS = {  # results folder -> what the demo calls the run
    "unsteered": "unsteered",
    "steered": "steered with the calibrated setting",
    "paper": "steered with the paper's condition (α = 1, every position)",
}


def forcing_runs(plan: DemoPlan) -> list[str]:
    return [name for name in FORCING_RUNS if name != "paper" or plan.paper_condition]


def _forcing_steps(plan: DemoPlan, steering: dict) -> None:
    grid = {"languages": ",".join(plan.languages)}
    gen = f"max_gen_toks={plan.max_gen_toks}"
    arguments = {"unsteered": {}, "steered": {"steer": "doc", **steering},
                 "paper": {"steer": "doc", **plan.paper_args()}}
    for name in forcing_runs(plan):
        folder = f"forcing-{name}"
        command = _lm_eval(plan, folder, ["lape_forcing_grid"], arguments[name], metadata=grid) + ["--gen_kwargs", gen]
        run_step(plan, f"language forcing grid ({len(plan.languages)}×{len(plan.languages)} languages), "
                       f"{FORCING_RUNS[name]}", command, outputs=[plan.results / folder])


def _translation_steps(plan: DemoPlan, steering: dict) -> None:
    tasks = [f"lape_udhr_translation_{pair}" for pair in plan.pairs]
    translation_args = {"steer": "doc", "doc_template": "add_target", **steering}
    for name, model_args in (("translation-unsteered", {}), ("translation-steered", translation_args)):
        run_step(plan, f"UDHR translation {', '.join(plan.pairs)}, {name.split('-')[1]}",
                 _lm_eval(plan, name, tasks, model_args, limit=plan.translation_docs),
                 outputs=[plan.results / name])


def _report_steps(plan: DemoPlan) -> None:
    """The two comparison tables and a heatmap per forcing run, each through its `lape-eval` command."""
    runs = forcing_runs(plan)
    labels = [part for name in runs for part in ("--label", name)]
    run_step(plan, "comparison table: forcing success (non-degenerate answers in the target language)",
             _lape_eval("table", *(str(plan.results / f"forcing-{name}") for name in runs), *labels,
                        "--baseline", "unsteered", "--rows", "config", "--columns", "task",
                        "--metric", "target_rate_clean_offdiag", "--output", str(plan.forcing_table)),
             outputs=[plan.forcing_table])
    run_step(plan, "comparison table: UDHR translation",
             _lape_eval("table", str(plan.results / "translation-unsteered"), str(plan.results / "translation-steered"),
                        "--label", "unsteered", "--label", "steered", "--baseline", "unsteered",
                        "--rows", "task", "--columns", "config", "--metric", "chrf_pp", "--output",
                        str(plan.translation_table)),
             outputs=[plan.translation_table])
    for name in runs:
        image = plan.heatmap if name == "steered" else plan.out / f"forcing_heatmap_{name}.png"
        run_step(plan, f"forcing heatmap, {name} (source × target: % non-degenerate answers in the target language)",
                 _lape_eval("plot", "forcing", str(plan.results / f"forcing-{name}"), "--success-field",
                            "target_rate_clean", "--out", str(image), "--csv", str(image.with_suffix(".csv"))),
                 outputs=[image, image.with_suffix(".csv")])


def _print_results(plan: DemoPlan, summary: dict) -> None:
    plan.say("\n" + plan.forcing_table.read_text(encoding="utf-8"))
    plan.say("Forcing success: non-degenerate answers in the target language, with Wilson 95 % intervals.")
    for name, headline in summary["forcing_headline"].items():
        if headline is not None:
            plan.say("  " + headline_line(FORCING_RUNS[name], headline))
    steering = summary["steering"]
    if "language_alphas" in steering:
        plan.say(f"  The calibrated setting ({steering['positions']} positions, α per target language) was chosen on "
                 "calibration questions that the grid never asks; the paper's condition (α = 1, every position) is "
                 "not tuned" + ("." if plan.paper_condition else ": add --paper-condition to run it too (a third "
                                "grid), or see docs/experiments/forcing-gemma.md."))
    plan.say(f"\nDone in {summary['seconds']:.0f} s. Outputs in {plan.out}:")
    for path in (plan.forcing_table, plan.translation_table, plan.heatmap, plan.results, plan.out / "summary.json",
                 plan.logs):
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
                                               "target_rate_clean_offdiag") for name in forcing_runs(plan)},
        "forcing_headline": {name: forcing_headline(plan.results / f"forcing-{name}") for name in forcing_runs(plan)},
        "paper_condition": plan.paper_args() if plan.paper_condition else None,
        "translation_chrf_pp": {pair: {name: _score(plan.results / f"translation-{name}",
                                                    f"lape_udhr_translation_{pair}", "chrf_pp")
                                       for name in ("unsteered", "steered")} for pair in plan.pairs},
    }
    write_json(plan.out / "summary.json", summary)
    return summary
