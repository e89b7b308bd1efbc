"""The UDHR translation task on the real Gemma-3-270M (slow: a few minutes on 2 CPU cores).

Gemma-3-270M is a base model: zero-shot with the paper's prompt it mostly repeats the English source
(chrF++ at the copy baseline), so the task runs 2-shot (``--num_fewshot 2``: the two shortest
paragraphs of the articles that are not evaluated). 8 held-out paragraphs per pair.
"""

from __future__ import annotations

import pytest
import sacrebleu

from lape_eval.task_metrics import corpus_chrf_pp
from lape_eval.task_suite import task_manager

PAIRS = ("lape_udhr_translation_en-de", "lape_udhr_translation_en-fr", "lape_udhr_translation_de-en")
PARAGRAPHS = 8


@pytest.mark.slow
def test_udhr_translation_on_gemma_is_well_above_the_empty_and_copy_baselines(gemma):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=gemma.model, tokenizer=gemma.tokenizer, batch_size=PARAGRAPHS, device="cpu")
    results = simple_evaluate(model=lm, tasks=list(PAIRS), task_manager=task_manager(), limit=PARAGRAPHS,
                              num_fewshot=2, bootstrap_iters=0, log_samples=True)
    report = []
    for task in PAIRS:
        rows = sorted(results["samples"][task], key=lambda s: s["doc_id"])
        assert len(rows) == PARAGRAPHS
        sources = [row["doc"]["source_text"] for row in rows]
        references = [row["doc"]["reference"] for row in rows]
        hypotheses = [row["filtered_resps"][0].strip() for row in rows]
        chrf = results["results"][task]["chrf_pp,none"]
        assert chrf == pytest.approx(sacrebleu.corpus_chrf(hypotheses, [references], word_order=2).score)
        empty = corpus_chrf_pp([("", ref) for ref in references])
        copy = corpus_chrf_pp(list(zip(sources, references)))
        on_target = results["results"][task]["target_rate,none"]
        report.append(f"{task}: chrF++ {chrf:.1f} (copy {copy:.1f}, empty {empty:.1f}), "
                      f"BLEU {results['results'][task]['corpus_bleu,none']:.1f}, target language {on_target:.0f}%")
        assert empty == 0.0
        if task in ("lape_udhr_translation_en-de", "lape_udhr_translation_en-fr"):
            assert chrf > copy + 10 and chrf > 1.5 * copy, report[-1]
            assert on_target >= 75.0, report[-1]
    print("\n".join(report))
