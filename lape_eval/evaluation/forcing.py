"""The language-forcing protocol (method spec §6.1), in one place.

The model is asked ``"Q: {question} \\nA:"`` and answers greedily with repetition penalty 1.1 until
``"\\nQ:"`` or ``"\\nA:"``; the answer's language is then identified. Two things use the protocol
and must not drift apart: the forcing tasks (``tasks/forcing/_forcing_yaml``, which
:mod:`lape_eval.evaluation.suite` writes from these values) and the calibration sweep
(:mod:`lape_eval.evaluation.calibration_sweep`), which chooses steering settings on other
questions under the same protocol.
"""

from __future__ import annotations

PROMPT = "Q: {question} \nA:"
STOP_STRINGS = ("\nQ:", "\nA:")
DO_SAMPLE = False  # greedy
REPETITION_PENALTY = 1.1
MAX_NEW_TOKENS = 256  # the paper's answer length (the task's max_gen_toks)
# The calibration's (and the CPU demo's) answer length: the language of an answer shows in its first
# sentence, and eight times fewer tokens make a sweep of many settings affordable.
SHORT_MAX_NEW_TOKENS = 32
# Rows per generation batch of a forcing grid on a CPU: the fastest of 8, 16, 32, 64 with the demo's steered
# steps on 2 cores (benchmarks/bench_demo_batch.py): batch 16, 32 and 64 took 0.66, 0.57 and 0.54 of
# batch 8's time, with identical answers. Fuller batches also waste less: a batch decodes until its
# longest answer ends, and steered answers run longer than unsteered ones.
GRID_BATCH_SIZE = 64


def forcing_prompt(question: str) -> str:
    return PROMPT.format(question=question)


def cut_at_stop_strings(text: str) -> str:
    """The answer up to the first stop string (what lm-eval's ``until`` keeps)."""
    for stop in STOP_STRINGS:
        text = text.split(stop)[0]
    return text
