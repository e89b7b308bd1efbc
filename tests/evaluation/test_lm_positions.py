"""``positions`` on log-likelihood requests (issue 14): lm-eval scores a (context, continuation) pair in
one right-padded pass without a KV cache. Each result must equal a manual, unbatched computation that
edits exactly the positions the definition names: ``prompt`` = the context's tokens, ``generated`` =
the continuation's tokens, ``answer`` = the positions whose next-token predictions are scored (the
context's last token and the continuation's tokens but the last), ``all`` = every position."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from float_bounds import FORWARD
from handmade_sets import make_set, mu, picks

# Compares floats computed on the fly: CI runs this file a second time under AVX2 kernels.
pytestmark = pytest.mark.numerics

ALPHA = 3.0
# Contexts and continuations of different lengths (batches of 3 are right-padded), an empty context
# (scored after the prefix token), and two requests that feed the same tokens with different context
# lengths ("Hello world" + " again" and "Hello" + " world again").
PAIRS = [
    ("Q: Is the sky blue? A:", " yes"),
    ("Q: Is the sky blue? A:", " no, it is green today"),
    ("Hi", " there, how are you"),
    ("Der schnelle braune Fuchs springt über den faulen", " Hund."),
    ("Hello world", " again"),
    ("Hello", " world again"),
    ("", " The quick brown fox"),
]
# lm-eval 0.4.13 scores requests that feed the same tokens in one row (its one-token-continuation
# cache) and then reads the shorter continuation's log-probabilities from the first positions of the
# longer one's slice instead of the last: stock HFLM gives "Hello world" + " again" a different value
# when "Hello" + " world again" is in the same call. With positions other than all the lape model
# scores them apart (they need different masks), which also gives the right value; with all it is
# HFLM's result, so that request is not compared there.
SAME_TOKENS_SHORTER_CONTINUATION = 4
# With steer=doc, request i uses DOC_SPECS[i]; the two requests with equal tokens share a spec.
DOC_SPECS = ["-en +de", "+fr:2", "none", "-de +en", "+fr:2", "+fr:2", "-en +de"]
# A request scored in a right-padded batch of 3 with a float32 log-softmax against the manual value (alone,
# float64 log-softmax of the float32 logits): one forward pass in another summation order, FORWARD relative
# to the value (a sum of log-probabilities, all of one sign); the float32 log-softmax over the 512-word
# vocabulary adds ≤ 512·u ≈ 3e-5 per token (u = 2^-24), which sets an absolute floor for small values.
# Measured ≤ 1.8e-7 relative under scalar, AVX2 and AVX-512 kernels; steering other positions moves a
# value by 2.8e-4 relative (0.034) or more.
LOGLIKELIHOOD_ABS = 1e-4


@pytest.fixture(scope="module")
def neurons(tmp_path_factory):
    path = tmp_path_factory.mktemp("sets") / "tiny.safetensors"
    make_set(width=96).save(path)
    return str(path)


def lape(model_dir, neurons, **args):
    from lape_eval.evaluation.lm import LapeLM

    return LapeLM(pretrained=str(model_dir), neurons=neurons, alpha=ALPHA, device="cpu", dtype="float32",
                  batch_size=3, **args)


def instance(request_type, arguments, doc_id, doc=None):
    from lm_eval.api.instance import Instance

    return Instance(request_type=request_type, doc=doc or {}, arguments=arguments, idx=0,
                    metadata=("tiny_positions", doc_id, 1))


def encode(lm, context, continuation):
    """Tokens as lm-eval's TemplateLM.loglikelihood makes them (an empty context is the prefix token)."""
    if context:
        return lm._encode_pair(context, continuation)
    tokens = lm.tok_encode(continuation, add_special_tokens=False)
    if tokens[0] == lm.prefix_token_id:
        return tokens[:1], tokens[1:]
    return [lm.prefix_token_id], tokens


def edit_by_hand(g: torch.Tensor, layer: int, spec, ns, where: list[int]) -> torch.Tensor:
    """The spec's operators (method add) at the token positions ``where`` of a one-row pass."""
    g = g.clone()
    for term in [t for t in spec.terms if t.sign == "-"] + [t for t in spec.terms if t.sign == "+"]:
        for j in picks(term.language, layer):
            for p in where:
                if term.sign == "-":
                    g[0, p, j] = spec.deactivate_value if term.strength is None else term.strength
                else:
                    g[0, p, j] += (spec.alpha if term.strength is None else term.strength) * mu(ns, term.language,
                                                                                                 layer, j)
    return g


def manual_loglikelihood(model, ns, spec, context, continuation, max_length, positions) -> float:
    """One request alone: lm-eval's input window, the edit at the named positions, the scored sum."""
    from lape_eval.arch import resolve

    whole = context + continuation
    kept = whole[-(max_length + 1):]
    inputs = kept[:-1]
    context_length = len(context) - (len(whole) - len(kept))  # after truncation from the left
    where = {"all": range(len(inputs)), "prompt": range(0, context_length),
             "generated": range(context_length, len(inputs)),
             "answer": range(max(context_length - 1, 0), len(inputs))}[positions]
    sites = resolve(model)
    handles = [sites.activations[layer].register_forward_hook(
        lambda m, a, out, layer=layer: edit_by_hand(out, layer, spec, ns, list(where)))
        for layer in range(sites.num_layers)] if not spec.is_identity else []
    try:
        with torch.no_grad():
            logits = model(torch.tensor([inputs])).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    scored = F.log_softmax(logits.double(), dim=-1)[len(inputs) - len(continuation):]
    return float(scored.gather(1, torch.tensor(continuation).unsqueeze(1)).sum())


@pytest.mark.parametrize("steer", ["-en +de", "doc"])
@pytest.mark.parametrize("max_length", [None, 20])  # 20: the longest requests are cut from the left
@pytest.mark.parametrize("positions", ["prompt", "generated", "answer", "all"])
def test_loglikelihood_edits_exactly_the_named_positions(tiny_model_dir, neurons, monkeypatch, positions, max_length,
                                                         steer):
    from lm_eval.models.huggingface import HFLM

    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.steering.spec import parse_steer

    extra = {} if max_length is None else {"max_length": max_length}
    lm = lape(tiny_model_dir("llama"), neurons, steer=steer, positions=positions, **extra)
    texts = DOC_SPECS if steer == "doc" else [steer] * len(PAIRS)
    requests = [instance("loglikelihood", pair, i, {"steer": text}) for i, (pair, text) in enumerate(zip(PAIRS, texts))]
    calls = []
    original = HFLM._loglikelihood_tokens
    monkeypatch.setattr(HFLM, "_loglikelihood_tokens",
                        lambda self, r, **k: calls.append(len(r)) or original(self, r, **k))
    got = [value for value, _ in lm.loglikelihood(requests)]

    ns = NeuronSet.load(neurons)
    model = lm.model
    for i, ((context, continuation), text) in enumerate(zip(PAIRS, texts)):
        spec = parse_steer(text, alpha=ALPHA, positions=positions)
        if positions == "all" and i == SAME_TOKENS_SHORTER_CONTINUATION:
            continue  # HFLM's own result is wrong there (see SAME_TOKENS_SHORTER_CONTINUATION)
        tokens = encode(lm, context, continuation)
        want = manual_loglikelihood(model, ns, spec, *tokens, lm.max_length, positions)
        assert got[i] == pytest.approx(want, rel=FORWARD, abs=LOGLIKELIHOOD_ABS), (i, context, continuation)
        if positions != "all" and text == "-en +de" and i in (1, 2):
            # The definition matters: this spec edits layer 0, so context positions reach the scores.
            everywhere = manual_loglikelihood(model, ns, spec, *tokens, lm.max_length, "all")
            assert abs(got[i] - everywhere) > 1e-3, (i, "positions should edit fewer tokens than all")
    # One HFLM call per spec; "Hello world" + " again" and "Hello" + " world again" feed the same
    # tokens with different context lengths, so where positions matter they are scored in two calls.
    assert len(calls) == len(set(texts)) + (positions != "all")


@pytest.mark.parametrize("positions", ["prompt", "all"])
def test_loglikelihood_rolling_steers_every_token_of_the_text(tiny_model_dir, neurons, positions):
    from lm_eval import utils

    from lape_eval.neurons.neuron_set import NeuronSet
    from lape_eval.steering.spec import parse_steer

    lm = lape(tiny_model_dir("llama"), neurons, steer="-en +de", positions=positions, max_length=16)
    unsteered = lape(tiny_model_dir("llama"), neurons, max_length=16)
    text = "The quick brown fox jumps over the lazy dog, and every evening we walk along the river."
    requests = [instance("loglikelihood_rolling", (text,), 0), instance("loglikelihood_rolling", (text[:30],), 1)]
    got = lm.loglikelihood_rolling(requests)

    ns = NeuronSet.load(neurons)
    spec = parse_steer("-en +de", alpha=ALPHA)
    for value, request in zip(got, requests):
        windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(
            token_list=lm.tok_encode(request.args[0]), prefix_token=lm.prefix_token_id, max_seq_len=16, context_len=1))
        windows = list(windows)
        assert request.doc_id == 1 or len(windows) > 1, "the long text should need several windows"
        want = sum(manual_loglikelihood(lm.model, ns, spec, context, continuation, 16, "all")
                   for context, continuation in windows)
        assert value == pytest.approx(want, rel=FORWARD, abs=LOGLIKELIHOOD_ABS)
    assert abs(got[0] - unsteered.loglikelihood_rolling(requests[:1])[0]) > 1e-3


@pytest.mark.parametrize("positions", ["answer", "generated"])
def test_loglikelihood_rolling_refuses_positions_without_a_split(tiny_model_dir, neurons, positions, monkeypatch):
    from lm_eval.models.huggingface import HFLM

    from lape_eval.errors import LapeEvalError

    lm = lape(tiny_model_dir("llama"), neurons, steer="-en +de", positions=positions)
    monkeypatch.setattr(HFLM, "_model_call", lambda *a, **k: pytest.fail("a forward pass ran"))
    with pytest.raises(LapeEvalError, match=f"positions={positions} has no meaning for the loglikelihood_rolling "
                                            "requests of task 'tiny_positions'.*positions=prompt"):
        lm.loglikelihood_rolling([instance("loglikelihood_rolling", ("Some text.",), 0)])
