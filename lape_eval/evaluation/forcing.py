"""The language-forcing protocol (method spec §6.1), in one place.

The model is asked ``"Q: {question} \\nA:"`` and answers greedily with repetition penalty 1.1 until
``"\\nQ:"`` or ``"\\nA:"``; the answer's language is then identified. Two things use the protocol
and must not drift apart: the forcing tasks (``tasks/forcing/_forcing_yaml``, which
:mod:`lape_eval.evaluation.suite` writes from these values) and the calibration sweep
(:mod:`lape_eval.evaluation.calibration_sweep`), which chooses steering settings on other
questions under the same protocol.

Prompt styles (the forcing tasks' option ``prompt_style``, in ``dataset_kwargs`` or ``--metadata``):
``paper`` is the prompt above; ``clas`` is CLaS-Bench's (method spec §9.2): the bare question, which
lm-eval's ``--apply_chat_template`` sends as the single user turn of the model's chat template, and
which CLaS-Bench answers greedily, repetition penalty 1.0, up to 1024 tokens, stopping at EOS only.
"""

from __future__ import annotations

from lape_eval.errors import LapeEvalError

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


# CLaS-Bench's decoding (method spec §9.2; its 1-prompt_generate.py): vLLM's LLM.chat, greedy.
CLAS_MAX_NEW_TOKENS = 1024
CLAS_REPETITION_PENALTY = 1.0
CLAS_STOP_STRINGS: tuple[str, ...] = ()  # EOS only (HFLM always adds it)

PROMPT_STYLES = {"paper": PROMPT, "clas": "{question}"}
DEFAULT_PROMPT_STYLE = "paper"


def check_prompt_style(style: str | None) -> str:
    style = str(style or DEFAULT_PROMPT_STYLE).strip().lower()
    if style not in PROMPT_STYLES:
        raise LapeEvalError(f"prompt_style {style!r}: choose paper (the paper's 'Q: {{question}} \\nA:', method spec "
                            "§6.1) or clas (CLaS-Bench's bare question, for lm-eval's --apply_chat_template, §9.2).")
    return style


def forcing_prompt(question: str, style: str = DEFAULT_PROMPT_STYLE) -> str:
    """The text a forcing document asks: the paper's prompt, or (``clas``) the bare question."""
    return PROMPT_STYLES[check_prompt_style(style)].format(question=question)


def cut_at_stop_strings(text: str) -> str:
    """The answer up to the first stop string (what lm-eval's ``until`` keeps)."""
    for stop in STOP_STRINGS:
        text = text.split(stop)[0]
    return text
