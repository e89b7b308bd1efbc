"""``lape-eval judge``: the CLaS-Bench relevance judge over forcing runs (lape_eval.reports.judging does
the work, lape_eval.evaluation.judge calls the model, lape_eval.reports.relevance holds the protocol)."""

from __future__ import annotations

import click

from lape_eval.cli.group import cli
from lape_eval.cli.options import split_names


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


@cli.command("judge")
@click.argument("runs", nargs=-1, required=True)
@click.option("--judge", "judge_model", default="Qwen/Qwen3-8B", show_default=True,
              help="The judge: an HF id or folder (or the served model's name with --judge-lm local-chat-completions).")
@click.option("--judge-lm", default="hf", show_default=True,
              help="lm-eval model type of the judge: hf, vllm, local-chat-completions (a local OpenAI-compatible "
                   "server, with --judge-args base_url=http://localhost:8000/v1/chat/completions), or any registered.")
@click.option("--judge-args", default="", help="More lm-eval model arguments of the judge: key=value,... "
                                               "(e.g. dtype=bfloat16, base_url=...).")
@click.option("--greedy", is_flag=True, help="Decode greedily instead of CLaS-Bench's seeded sampling "
                                             "(T 0.7, top-p 0.8, top-k 20).")
@click.option("--seed", type=int, default=1234, show_default=True, help="Seed of the judge's sampling.")
@click.option("--max-gen-toks", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Tokens per judge reply (CLaS-Bench: up to 16,384); a reply cut before its rating is unparsed.")
@click.option("--batch-size", default="1", show_default=True, help="Judge batch size (an integer or auto).")
@click.option("--device", default=None, help="Device of an in-process judge (cpu, cuda, cuda:1; default: lm-eval's).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Judge at most the first N answers per task.")
@click.option("--tasks", "tasks", multiple=True, help="Only tasks matching these globs (comma-separated or repeated).")
@click.option("--source-field", default="source_lang", show_default=True, help="Document field: the prompt's language.")
@click.option("--target-field", default="target_lang", show_default=True, help="Document field: the target language.")
@click.option("--question-field", default=None,
              help="Document field with the question (default: question, input or prompt, else the prompt as given).")
def judge(runs, judge_model, judge_lm, judge_args, greedy, seed, max_gen_toks, batch_size, device, limit, tasks,
          source_field, target_field, question_field):
    """Rate every answer of forcing runs for relevance with a judge model (CLaS-Bench's protocol).

    RUNS are lm-eval output folders or results files of forcing tasks run with --log_samples. The judge
    rates each answer 0, 1 or 2 for relevance and coherence, ignoring its language; relevance is the mean
    rating / 2 × 100 and the steering score the harmonic mean of it and the language forcing success (LFS),
    overall, per target and per source language. Judgments go to judgments_<task>_<date>.jsonl next to the
    samples and are reused: judging again calls the judge only for new answers. `lape-eval table` and the
    forcing experiment's report then show relevance and the steering score.
    """
    from lape_eval.evaluation.judge import JudgeSettings
    from lape_eval.reports.judging import judge_runs
    from lape_eval.reports.outcomes import FieldNames
    from lape_eval.reports.relevance import counts_note

    settings = JudgeSettings(model=judge_model, lm=judge_lm, model_args=judge_args, greedy=greedy, seed=seed,
                             max_gen_toks=max_gen_toks)
    names = FieldNames(source=source_field, target=target_field, question=question_field)
    size = batch_size if batch_size == "auto" or batch_size.startswith("auto:") else int(batch_size)
    done = judge_runs(list(runs), settings, tasks=split_names(tasks), names=names, batch_size=size, limit=limit,
                      device=device)
    click.echo(f"judge: {settings.label()}")
    for item in done:
        overall = item.scores.overall
        click.echo(f"{item.run.label or item.run.path.parent.name} / {item.task}: LFS {_pct(overall.lfs)}, relevance "
                   f"{_pct(overall.relevance)}, steering score {_pct(overall.steering)} "
                   f"({counts_note(overall)}; {item.judged_now} judged now, {item.reused} from the cache) -> "
                   f"{item.path}")
