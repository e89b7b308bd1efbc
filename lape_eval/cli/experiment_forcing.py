"""``lape-eval experiment forcing``: the options, turned into forcing settings and run
(:mod:`lape_eval.experiments.forcing_run` does the work)."""

from __future__ import annotations

import click

from lape_eval.cli.experiments import experiment
from lape_eval.cli.options import split_names
from lape_eval.evaluation.forcing import GRID_BATCH_SIZE


@experiment.command("forcing")
@click.argument("calibration", required=False, metavar="[CALIBRATION.json]")
@click.option("--preset", type=click.Choice(["paper", "calibrated", "clas"]), default="paper", show_default=True,
              help="paper: the paper's protocol (method spec §6.1); calibrated: the settings of the "
                   "`lape-eval calibrate` file given as argument (--preset calibrated FILE); clas: CLaS-Bench's "
                   "(§9.2): its 70 questions in its 32 languages, asked bare in the chat template, greedy, "
                   "repetition penalty 1.0, 1024 tokens, EOS only, fastText LID (its lid218e.bin via --lid-model).")
@click.option("--out", "out_dir", default="runs/forcing", show_default=True, type=click.Path(file_okay=False),
              help="The experiment's folder; re-running resumes (finished runs are skipped).")
@click.option("--model", default=None, help="HF id, local folder, or 'gemma-3-270m-gguf' (the default).")
@click.option("--sets", multiple=True, help="Neuron sets (files or shipped names), comma-separated: one lm-eval run "
                                           "(one model load) each. Required unless the preset names one.")
@click.option("--languages", default=None, help="Grid languages (sources and targets), comma-separated, or 'all' "
                                                "(default: the paper's 21).")
@click.option("--conditions", multiple=True,
              help="Subset of baseline,act,deact_act,repl,deact_repl (default: all five).")
@click.option("--questions", default=None, help="bundled (default: the paper's six, bundled), bundled-all, paper "
                                                "(the reference code's, downloaded), paper:PATH (a local copy of "
                                                "src/batch_generation.py), clas (CLaS-Bench's 70, downloaded once), "
                                                "clas:PATH (a local copy of its CLaS-Bench/data folder or a clone) "
                                                "or FILE.jsonl.")
@click.option("--prompt", "prompt_style", type=click.Choice(["paper", "clas"]), default=None,
              help="What each document asks: paper ('Q: {question} \\nA:', the default) or clas (the bare "
                   "question; preset clas).")
@click.option("--apply-chat-template/--no-apply-chat-template", default=None,
              help="Pass --apply_chat_template to lm_eval: the prompt becomes the one user turn of the model's chat "
                   "template (on with preset clas; needs a tokenizer with a chat template).")
@click.option("--max-gen-toks", type=int, default=None, help="Tokens per answer (paper: 256; clas: 1024).")
@click.option("--lid", default=None, help="Language identifier: cld2, fasttext (paper: lid.176), fasttext:PATH, "
                                          "py3langid, vote.")
@click.option("--lid-model", default=None, envvar="LAPE_EVAL_LID_MODEL",
              help="fastText model file for --lid fasttext (e.g. the paper's lid.176.bin; default: the bundled "
                   "lid.176.ftz).")
@click.option("--alpha", type=float, default=None, help="α of the activations (paper: 1).")
@click.option("--deactivate-value", type=float, default=None, help="c of the deactivations (paper: 0).")
@click.option("--positions", default=None, help="all (paper), prompt, generated, answer.")
@click.option("--method", default=None, help="Operator of the activate conditions: add (paper), diffmean, multiply.")
@click.option("--language-alphas", default=None, help="Per-language α: a calibration or {lang: α} JSON file.")
@click.option("--repetition-penalty", type=float, default=None, help="Paper: 1.1; clas: 1.0.")
@click.option("--dtype", default=None, help="Model dtype (default float32).")
@click.option("--device", default=None, help="cpu (default), cuda, ...")
@click.option("--batch-size", type=int, default=None, help=f"Generation batch size (default {GRID_BATCH_SIZE}, measured fastest-or-near on CPU).")
@click.option("--limit", type=int, default=None, help="Documents per condition (a smoke test; not the paper's grid).")
@click.option("--no-figures", is_flag=True, help="Skip the heatmaps.")
def forcing(calibration, preset, out_dir, model, sets, languages, conditions, questions, prompt_style,
            apply_chat_template, max_gen_toks, lid, lid_model, alpha, deactivate_value, positions, method,
            language_alphas, repetition_penalty, dtype, device, batch_size, limit, no_figures):
    """The paper's Figure-1 experiment: language forcing under baseline, activate-only, deactivate + activate and
    replacement (with and without deactivation), for each neuron set, through lm-eval; writes the runs, report.md,
    CSVs and heatmaps into OUT.

    \b
    lape-eval experiment forcing --preset paper --sets gemma-3-270m-udhr-1pct --languages en,de,fr
    lape-eval experiment forcing --preset calibrated calibration.json --out runs/forcing-calibrated
    lape-eval experiment forcing --preset clas --model MODEL-INSTRUCT --sets SET --questions clas:CLaS-Bench/data
    """
    from pathlib import Path

    from lape_eval.errors import LapeEvalError
    from lape_eval.experiments.forcing_plan import calibrated_settings, clas_settings, paper_settings
    from lape_eval.experiments.forcing_run import ForcingExperiment, run_forcing_experiment
    from lape_eval.languages import parse_languages

    overrides = dict(model=model, sets=split_names(sets) or None, questions=questions, prompt=prompt_style,
                     apply_chat_template=apply_chat_template, max_gen_toks=max_gen_toks,
                     lid=lid, lid_model=lid_model, alpha=alpha, deactivate_value=deactivate_value, positions=positions,
                     method=method, language_alphas=language_alphas, repetition_penalty=repetition_penalty,
                     dtype=dtype, device=device, batch_size=batch_size, limit=limit,
                     languages=parse_languages(languages) if languages else None,
                     conditions=split_names(conditions) or None)
    if preset == "calibrated":
        if not calibration:
            raise LapeEvalError("--preset calibrated needs the calibration file: lape-eval experiment forcing --preset "
                                "calibrated CALIBRATION.json (a `lape-eval calibrate` output).")
        settings = calibrated_settings(calibration, **overrides)
    else:
        if calibration:
            raise LapeEvalError(f"The argument {calibration!r} is only read with --preset calibrated; with --preset "
                                f"{preset} give no file (use --language-alphas for per-language strengths).")
        settings = (clas_settings if preset == "clas" else paper_settings)(**overrides)
    run_forcing_experiment(ForcingExperiment(Path(out_dir), settings, say=click.echo, figures=not no_figures))
