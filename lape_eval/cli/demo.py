"""``lape-eval demo``: the options, turned into a :class:`lape_eval.demo.DemoPlan` and run
(:mod:`lape_eval.demo` does the work)."""

from __future__ import annotations

import click

from lape_eval.cli.group import cli
from lape_eval.demo.plan import BATCH_SIZE


@cli.command()
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--languages", default=None, help="Forcing-grid languages (default: en,de,fr,es,zh,ru,ja).")
@click.option("--all-languages", is_flag=True, help="The forcing grid over all 21 languages (about 9x longer).")
@click.option("--pairs", default=None, help="UDHR translation pairs (default: en-de,en-fr,en-zh).")
@click.option("--neurons", "neuron_set", default=None,
              help="Steer with this neuron set (default: the set the calibration chose among the shipped 1-5 % sets).")
@click.option("--identify", is_flag=True, help="Rebuild the neuron sets from the bundled UDHR instead of using the shipped ones.")
@click.option("--calibrate", is_flag=True,
              help="Re-run the calibration (neuron set, positions and a strength per target language).")
@click.option("--calibration", default=None,
              help="A calibration JSON to use instead of the shipped one; 'none': add with alpha=2 on the 1 % set.")
@click.option("--max-gen-toks", type=int, default=32, show_default=True, help="Tokens generated per forcing answer.")
@click.option("--translation-docs", type=int, default=10, show_default=True, help="UDHR paragraphs per translation pair.")
@click.option("--batch-size", type=click.IntRange(min=1), default=BATCH_SIZE, show_default=True,
              help="Rows per generation batch of the lm-eval runs (measured fastest on 2 CPU cores: benchmarks/RESULTS.md, rows demo_batch_*).")
@click.option("--paper-condition", is_flag=True,
              help="Also run the forcing grid under the paper's own condition (alpha=1, every position; a third "
                   "grid, about 3 more minutes on 2 cores).")
@click.option("--verbose", is_flag=True,
              help="Stream every step's output (lm-eval's logging included) instead of one line per step.")
def demo(out_dir, languages, all_languages, pairs, neuron_set, identify, calibrate, calibration, max_gen_toks,
         translation_docs, batch_size, paper_condition, verbose):
    """The whole method on Gemma-3-270M, offline: neuron sets, steered lm-eval runs, table, heatmap.

    Every step is a real lape-eval / lm_eval command. The terminal shows one line per step; the step's
    command and everything it printed are in OUT/logs/STEP.log (--verbose streams them instead). Steps
    whose outputs exist are skipped, so an interrupted demo resumes.
    """
    from pathlib import Path

    from lape_eval.demo import DemoPlan, StepFailed, parse_pairs, run_demo
    from lape_eval.languages import PAPER_LANGUAGES, parse_languages

    plan = DemoPlan(Path(out_dir), identify=identify, calibrate=calibrate, calibration=calibration,
                    max_gen_toks=max_gen_toks, translation_docs=translation_docs, batch_size=batch_size,
                    paper_condition=paper_condition, verbose=verbose, say=click.echo)
    if all_languages:
        plan.languages = list(PAPER_LANGUAGES)
    elif languages:
        plan.languages = parse_languages(languages)
    if pairs:
        plan.pairs = parse_pairs(pairs)
    if neuron_set:
        plan.neuron_set = neuron_set
    try:
        run_demo(plan)
    except StepFailed as error:  # exit code 1: the message says where the step's output is
        raise click.ClickException(str(error)) from None
