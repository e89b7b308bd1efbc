"""``lape-eval experiment downstream``: the paper's downstream heatmaps (method spec §6.2-6.5)."""

from __future__ import annotations

import json

import click

from lape_eval.cli.experiments import experiment
from lape_eval.cli.options import split_names
from lape_eval.errors import LapeEvalError

_FAMILIES = ("udhr_translation", "flores", "belebele", "belebele_ll", "xquad", "xnli", "xnli_ll")


@experiment.command("downstream")
@click.option("--model", "model_name", required=True,
              help="HF id, local folder, or 'gemma-3-270m-gguf' (the bundled Gemma-3-270M).")
@click.option("--neurons", "neuron_sets", required=True, multiple=True,
              help="Neuron set files or shipped names (comma-separated or repeated): one heatmap per set.")
@click.option("--family", type=click.Choice(_FAMILIES), required=True,
              help="Task family: udhr_translation (offline), flores, belebele, xquad, xnli (the paper's generative "
                   "prompts), belebele_ll / xnli_ll (log-likelihood).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the runs, downstream.csv, heatmaps/, report.md (re-running skips finished sets).")
@click.option("--languages", default="all", show_default=True,
              help="Test languages (translation: see --direction); default all of the family's.")
@click.option("--direction", type=click.Choice(["from-en", "to-en"]), default="from-en", show_default=True,
              help="Translation families: English into each test language (from-en, the paper's) or each test "
                   "language into English (to-en).")
@click.option("--activated", default="all", show_default=True,
              help="Activated languages (+X), default the 21; every set must have them.")
@click.option("--metric", "metrics", multiple=True,
              help="Metric(s) to draw (default: sentence_bleu,chrf_pp for translation, exact_match,f1 for XQuAD, "
                   "acc otherwise).")
@click.option("--method", default=None, help="Steering method of the + terms (lape model_args method; default add).")
@click.option("--alpha", default=None, help="α of the + terms (default 1, the paper).")
@click.option("--language-alphas", default=None,
              help="Per-language α: 'zh:0.5 de:2' or a JSON file (a lape-eval calibrate output).")
@click.option("--positions", default=None, help="Steered positions: all (default, the paper), prompt, generated, answer.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Documents per test language (default all).")
@click.option("--max-gen-toks", type=click.IntRange(min=1), default=None,
              help="Override the task's maximum of new tokens (a short trial run).")
@click.option("--metadata", "metadata_json", default=None,
              help="Task options as JSON: data_dir, udhr_split, flores_split, xnli_max_docs, ...")
@click.option("--data-dir", default=None, help="Local benchmark files (metadata data_dir; see tasks/README.md).")
@click.option("--batch-size", default="8", show_default=True, help="lm-eval batch size (a number or auto).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--dtype", default="float32", show_default=True)
@click.option("--revision", default=None, help="Model revision on the HF hub.")
@click.option("--trust-remote-code", is_flag=True, help="Allow the model repo's own Python code to run.")
@click.option("--test", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              help="auto: paired bootstrap per cell (sacrebleu's for chrF++/BLEU); none: no significance marks.")
@click.option("--significance", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="Level of the † marks.")
@click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=12345, show_default=True)
def downstream(model_name, neuron_sets, family, out_dir, languages, direction, activated, metrics, method, alpha,
               language_alphas, positions, limit, max_gen_toks, metadata_json, data_dir, batch_size, device, dtype,
               revision, trust_remote_code, test, significance, resamples, seed):
    """Activate X while testing Y: the paper's test-language x activated-language heatmaps of improvement.

    One lm-eval run per neuron set (lape model, steer=doc): each test language's documents unsteered and
    with +X for every activated language X. Writes OUT/downstream.csv (every cell with baseline, steered,
    improvement and p-value), OUT/heatmaps/<set>-<metric>.png and .csv, OUT/report.md and OUT/summary.json.
    """
    from lape_eval.experiments.downstream import downstream_settings, run_downstream

    metadata = {}
    if metadata_json:
        try:
            metadata = json.loads(metadata_json)
        except json.JSONDecodeError as error:
            raise LapeEvalError(f"--metadata is not valid JSON ({error.msg}): give an object such as "
                                "'{\"udhr_split\": \"all\"}'.") from None
        if not isinstance(metadata, dict):
            raise LapeEvalError("--metadata must be a JSON object such as '{\"udhr_split\": \"all\"}'.")
    if data_dir:
        metadata["data_dir"] = data_dir
    steering = {key: value for key, value in (("method", method), ("alpha", alpha), ("positions", positions),
                                              ("language_alphas", language_alphas)) if value is not None}
    model_options = {"revision": revision} if revision else {}
    if trust_remote_code:
        model_options["trust_remote_code"] = True
    settings = downstream_settings(
        family, languages, activated, split_names(metrics) or None, direction=direction, limit=limit, max_gen_toks=max_gen_toks,
        batch_size=batch_size, device=device, dtype=dtype, steering=steering, model_options=model_options,
        metadata=metadata, test=test, significance=significance, resamples=resamples, seed=seed)
    result = run_downstream(model_name, split_names(neuron_sets), out_dir, settings,
                            echo=lambda text: click.echo(text, err=True))
    click.echo(result.files["report"].read_text(encoding="utf-8"))
    for name in ("csv", "summary"):
        click.echo(f"wrote {result.files[name]}", err=True)
