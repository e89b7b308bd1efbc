"""The UDHR translation task on the real Gemma-3-270M (slow: a few minutes on 2 CPU cores).

Gemma-3-270M is a base model: zero-shot with the paper's prompt it mostly repeats the English source
(chrF++ at the copy-the-source baseline), and it summarises long paragraphs instead of translating
them. So the test runs the task as a base model needs it, with the paper's prompt and decoding
otherwise unchanged: 4-shot (``--num_fewshot 4``: the four shortest paragraphs of the articles that
are not evaluated) on the sentence-like held-out paragraphs (``udhr_max_words: 30``: at most 30
English words; 11 paragraphs, the first 10 evaluated).
"""

from __future__ import annotations

import pytest
import sacrebleu

from lape_eval.evaluation.metrics import corpus_chrf_pp
from lape_eval.evaluation.suite import task_manager

# The two pairs the claims are made on (de-en, which was only reported, is left to the demo's runs).
PAIRS = ("lape_udhr_translation_en-de", "lape_udhr_translation_en-fr")
PARAGRAPHS = 10
SHOTS = 4


@pytest.mark.slow
def test_udhr_translation_on_gemma_is_well_above_the_empty_and_copy_baselines(gemma):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=gemma.model, tokenizer=gemma.tokenizer, batch_size=PARAGRAPHS, device="cpu")
    results = simple_evaluate(model=lm, tasks=list(PAIRS), task_manager=task_manager(metadata={"udhr_max_words": 30}),
                              limit=PARAGRAPHS, num_fewshot=SHOTS, bootstrap_iters=0, log_samples=True)
    report = []
    for task in PAIRS:
        rows = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        assert len(rows) == PARAGRAPHS
        assert rows[0]["arguments"][0][1]["repetition_penalty"] == 1.1  # the paper's decoding
        sources = [row["doc"]["source_text"] for row in rows]
        references = [row["doc"]["reference"] for row in rows]
        hypotheses = [row["filtered_resps"][0].strip() for row in rows]
        chrf = results["results"][task]["chrf_pp,none"]
        assert chrf == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references], word_order=2).score)
        empty = corpus_chrf_pp([("", ref) for ref in references])
        copy = corpus_chrf_pp(list(zip(sources, references)))
        on_target = results["results"][task]["target_rate,none"]
        report.append(f"{task}: chrF++ {chrf:.1f} (copy-the-source {copy:.1f}, empty {empty:.1f}), "
                      f"BLEU {results['results'][task]['corpus_bleu,none']:.1f}, in the target language {on_target:.0f} %")
        assert empty == 0.0
        assert chrf > copy + 10 and chrf > 1.4 * copy, report[-1]
        assert on_target >= 80.0, report[-1]
    print("\n" + "\n".join(report))
