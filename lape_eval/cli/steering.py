"""Commands that steer and evaluate: calibrate, export-steered, run. Each checks and parses its
options, calls one library function (lape_eval.evaluation.calibration_sweep, lape_eval.steering.export,
lape_eval.evaluation.run) and prints.
"""

from __future__ import annotations

import click

from lape_eval.cli.group import cli
from lape_eval.cli.options import model_options, split_names
from lape_eval.evaluation.forcing import SHORT_MAX_NEW_TOKENS


@cli.command()
@model_options
@click.option("--neurons", "neuron_sets", default="",
              help="Neuron set(s) to try: files or shipped set names, comma-separated.")
@click.option("--directions", default="",
              help="Residual direction artifact(s) to try (from `lape-eval directions`, comma-separated): "
                   "method residual_diffmean at each of --layers.")
@click.option("--layers", default="",
              help="Decoder layers (0-based, comma-separated) to try with --directions, e.g. 4,8,12.")
@click.option("--targets", required=True, help="Target languages to calibrate (comma-separated).")
@click.option("--sources", default="en,de,fr,es,zh,ru,ja", show_default=True, help="Prompt languages.")
@click.option("--alphas", default="0.25,0.5,1,1.5,2,3", show_default=True, help="Candidate strengths.")
@click.option("--methods", default="add", show_default=True,
              help="Methods to try for the '+' term (comma-separated: add, diffmean, replace).")
@click.option("--positions", default="all", show_default=True,
              help="Positions to try (comma-separated: all, prompt, generated, answer).")
@click.option("--questions", "questions_per_source", type=int, default=None, help="Questions per source (default: all 8).")
@click.option("--max-new-tokens", type=int, default=SHORT_MAX_NEW_TOKENS, show_default=True)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="Calibration JSON to write.")
def calibrate(model_name, revision, dtype, device, trust_remote_code, neuron_sets, directions, layers, targets, sources,
              alphas, methods, positions, questions_per_source, max_new_tokens, out_file):
    """Choose steering settings on calibration prompts: the set, method and positions (for a direction
    artifact: the layer and positions) with the best mean success, and a strength per target language.

    Writes OUT (JSON); pass it to the lape model as language_alphas=OUT (`lape-eval demo` also takes the
    set, method and positions from it).
    """
    from lape_eval.evaluation.calibration_sweep import calibrate as run_calibration

    try:
        candidates = [float(a) for a in split_names([alphas])]
    except ValueError:
        raise click.BadParameter(f"write numbers separated by commas, e.g. 0.5,1,2 (got {alphas!r}).",
                                 param_hint="--alphas") from None
    try:
        layer_numbers = [int(layer) for layer in split_names([layers])]
    except ValueError:
        raise click.BadParameter(f"write layer numbers separated by commas, e.g. 4,8,12 (got {layers!r}).",
                                 param_hint="--layers") from None
    result = run_calibration(model_name, split_names([neuron_sets]), targets=targets, sources=sources,
                             alphas=candidates, methods=split_names([methods]), positions=split_names([positions]),
                             directions=split_names([directions]), layers=layer_numbers,
                             questions_per_source=questions_per_source, max_new_tokens=max_new_tokens, out=out_file,
                             revision=revision, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    for setting in result.settings:
        click.echo(f"{setting.key}: mean best rate {result.score(setting):.1f}%")
    click.echo(f"chosen: {result.chosen.key}")
    for target, rates in result.rates[result.chosen.key].items():
        shown = "  ".join(f"α={alpha}: {rate:.0f}%" for alpha, rate in rates.items())
        click.echo(f"  {target}: best α={result.language_alphas[target]:g}   {shown}")


@cli.command("export-steered")
@click.argument("source", metavar="NEURON_SET|DIRECTIONS")
@click.option("--model", "model_name", required=True, help="The model (only its config is read).")
@click.option("--steer", "spec", required=True,
              help="An additive spec: '+de', '+de +fr:0.5'; with residual_diffmean '-en +de' or '+de'.")
@click.option("--method", default="add", show_default=True, type=click.Choice(["add", "diffmean", "residual_diffmean"]))
@click.option("--alpha", default=1.0, show_default=True, type=float)
@click.option("--language-alphas", default=None, help="Per-language α ('zh:0.5 de:1.5' or a calibration JSON).")
@click.option("--layer", type=int, default=None,
              help="residual_diffmean: the decoder layer (0-based) whose output the direction is added to.")
@click.option("--peft", "for_peft", is_flag=True, help="Name the hookpoints as under a PEFT adapter (steered ... peft=).")
@click.option("--trust-remote-code", is_flag=True)
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False), help="The .pt file to write.")
def export_steered(source, model_name, spec, method, alpha, language_alphas, layer, for_peft, trust_remote_code,
                   out_file):
    """Write an additive steer spec as lm-eval's built-in `steered` model's .pt file.

    NEURON_SET|DIRECTIONS is a neuron set (methods add, diffmean: vectors on the MLP activations) or,
    for --method residual_diffmean, a direction artifact from `lape-eval directions` (one vector on
    the output of decoder layer --layer).

    Use it with: lm_eval --model steered --model_args pretrained=MODEL,steer_path=OUT
    """
    from lape_eval.steering.export import export_steered as write_steered

    write_steered(source, model_name, spec, out=out_file, method=method, alpha=alpha, for_peft=for_peft,
                  trust_remote_code=trust_remote_code, layer=layer, language_alphas=language_alphas)
    click.echo(f"wrote {out_file}: lm_eval --model steered --model_args pretrained={model_name},steer_path={out_file}")


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []})
@click.argument("lm_eval_args", nargs=-1, type=click.UNPROCESSED)
def run(lm_eval_args):
    """Run lm_eval with lape-eval's tasks and models available: lape-eval run --model lape ...

    Every argument is passed to lm_eval unchanged; lape-eval's task folder is added to
    --include_path (merged with yours if you give one). FLORES / UDHR translation pairs that
    tasks/ does not ship (e.g. lape_udhr_translation_mt-ko) are written on demand.
    """
    from lape_eval.evaluation.run import run_lm_eval

    run_lm_eval(list(lm_eval_args))
