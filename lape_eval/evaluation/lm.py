"""The lm-eval model ``lape``: Hugging Face's ``hf`` model with language-neuron steering.

``lm_eval --model lape --model_args pretrained=...,neurons=...,steer='-en +de'`` evaluates the
model with the steer spec applied to every forward pass (log-likelihoods and generation). Every
HFLM argument works as with ``hf`` (``peft``, ``dtype``, ``batch_size``, ``device``,
``parallelize``, ...). With no ``steer`` the model behaves exactly like ``hf``. ``neuron_delta=PATH``
merges a subnetwork fine-tune (``lape-eval finetune``) into the weights after loading; it composes
with ``peft`` and with steering.

``method=residual_diffmean,directions=FILE,layer=N`` steers the residual stream instead of neurons
(CLaS-Bench's DiffMean, :mod:`lape_eval.steering.residual`): ``steer='-en +de'`` adds
α·normalise(mean(de) − mean(en)) to decoder layer N's output, with the means of a direction artifact
(``lape-eval directions``); everything below (``steer=doc``, ``language_alphas``, positions) works
the same way.

``steer=doc`` steers per document: the spec comes from the document's ``steer`` field, or else from
``doc_template`` (default ``-{source_lang} +{target_lang}``) filled with the document's fields, so
that one run with one model load evaluates a whole grid. Every document's spec is checked against
the neuron set before anything runs; an error names the task and the document.

**Generation** (``generate_until``) runs HFLM's own loop once over all the requests of a call, so
requests of different specs share batches exactly as HFLM batches any requests (sorted by prompt
length, up to ``batch_size`` rows, grouped by generation settings), and each row is steered by its
own document's spec in the same forward pass (:func:`~lape_eval.steering.hooks.compile_rowwise`).
Each prompt travels through HFLM's reordering as a ``str`` that carries its spec
(:class:`_SteeredPrompt`); HFLM encodes a batch's prompts right before generating them
(``tok_batch_encode``), which tells this model the batch's specs in row order, and
``_model_generate`` installs the row-wise steering for that one call. Everything else (stop
sequences, ``max_gen_toks``, EOS, left padding, chat templates, data-parallel ranks) is HFLM's own
code. Identical greedy requests (same prompt, generation settings and spec) are generated once.
lm-eval's response cache (``--use_cache``) is refused with ``steer=doc``: it keys answers by prompt
and settings alone, so it would hand one document's steered answer to another.

**Log-likelihoods** keep one HFLM call per spec: a log-likelihood batch is a single forward pass (no
decoding loop), a grid's per-spec groups hold every choice of every document of a cell, so row-wise
batching would only fill each group's last batch; and HFLM's one-token-continuation cache merges
requests by their tokens alone, which would hand rows of different specs one shared result.

**Positions on log-likelihood requests.** lm-eval scores a (context, continuation) pair in one
right-padded pass without a KV cache, so the positions are set from each row's context length:
``prompt`` edits the context's tokens, ``generated`` the continuation's tokens (all but the last,
which is never an input), ``answer`` the positions whose next-token predictions are scored (the
context's last token and the continuation's tokens but the last); ``all`` edits every position, as
the built-in ``steered`` model does. ``loglikelihood_rolling`` scores every token of a text: there
``prompt`` edits every token (like ``all``), and ``answer`` / ``generated``, which have no meaning
without a context/continuation split, are refused.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, replace

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from lape_eval.adapters.delta import NeuronDelta
from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.models import resolve_pretrained
from lape_eval.neurons.directions import ResidualDirections
from lape_eval.neurons.shipped import resolve_neuron_set
from lape_eval.steering.hooks import SteeringHandle, compile_rowwise, compile_steer
from lape_eval.steering.residual import compile_residual, compile_residual_rowwise
from lape_eval.steering.spec import RESIDUAL_DIFFMEAN, SteerSpec, parse_steer

log = logging.getLogger(__name__)

PER_DOCUMENT = "doc"
DEFAULT_DOC_TEMPLATE = "-{source_lang} +{target_lang}"
# Named templates: braces in --model_args make lm-eval try to parse the whole string as JSON.
NAMED_DOC_TEMPLATES = {"swap": DEFAULT_DOC_TEMPLATE, "add_target": "+{target_lang}"}


@dataclass(frozen=True)
class LapeArguments:
    """The ``lape`` model's own arguments, checked: what to steer with, and what to merge."""

    steer_args: dict  # method, alpha, beta, deactivate_value, positions, language_alphas
    per_document: bool  # steer=doc
    doc_template: str
    global_spec: SteerSpec  # the one spec of every request (identity with steer=doc)
    neurons_source: str | None  # neurons= as given
    neuron_set: object | None
    neuron_delta: tuple[str, object] | None  # (path, NeuronDelta): a subnetwork fine-tune
    directions_source: str | None = None  # directions= as given (method=residual_diffmean)
    directions: object | None = None  # ResidualDirections
    layer: int | None = None  # the decoder layer residual_diffmean steers

    @property
    def steers(self) -> bool:
        return self.per_document or not self.global_spec.is_identity

    @property
    def residual(self) -> bool:
        return self.steer_args["method"] == RESIDUAL_DIFFMEAN


def check_lape_arguments(*, neurons=None, steer=None, method="add", alpha=1.0, beta=1.0, deactivate_value=0.0,
                         positions="all", language_alphas=None, doc_template=DEFAULT_DOC_TEMPLATE,
                         neuron_delta=None, tp_plan=None, directions=None, layer=None) -> LapeArguments:
    """Everything a user can get wrong in the ``lape`` model's arguments, checked without the model."""
    steer_args = dict(method=method, alpha=alpha, beta=beta, deactivate_value=deactivate_value,
                      positions=positions, language_alphas=language_alphas)
    per_document = str(steer).strip().lower() == PER_DOCUMENT if steer is not None else False
    global_spec = parse_steer(None if per_document else steer, **steer_args)
    steer_args["method"] = global_spec.method  # normalised ("Residual_DiffMean" -> "residual_diffmean")
    residual = global_spec.method == RESIDUAL_DIFFMEAN
    _check_steering_source(residual, neurons, directions, layer)
    neuron_set = None if neurons is None else resolve_neuron_set(str(neurons))
    loaded_directions = None if directions is None else ResidualDirections.load(str(directions))
    arguments = LapeArguments(steer_args, per_document, NAMED_DOC_TEMPLATES.get(str(doc_template), str(doc_template)),
                              global_spec, None if neurons is None else str(neurons), neuron_set,
                              None if neuron_delta is None else (str(neuron_delta), NeuronDelta.load(str(neuron_delta))),
                              None if directions is None else str(directions), loaded_directions,
                              None if layer is None else _layer_number(layer))
    if residual:
        loaded_directions.check_layer(arguments.layer)
        if not per_document:
            compile_residual(global_spec, loaded_directions, arguments.layer)  # languages present
    elif neuron_set is None and arguments.steers:
        raise LapeEvalError("steer= needs a neuron set: add neurons=PATH (or the name of a shipped set) "
                            f"to --model_args (or, to steer the residual stream, method={RESIDUAL_DIFFMEAN} with "
                            "directions=PATH,layer=N).")
    if neuron_set is not None and not per_document:
        compile_steer(global_spec, neuron_set)  # languages present, means available
    if tp_plan is not None and arguments.steers:
        raise LapeEvalError(
            "Steering does not work with tensor parallelism (tp_plan=...): it splits every MLP's neurons "
            "over the processes, and the neuron indices of a set refer to whole layers. Use "
            "parallelize=True (whole layers per GPU) or data parallelism (accelerate launch -m lm_eval); "
            "see docs/scale-out.md."
        )
    return arguments


def _check_steering_source(residual: bool, neurons, directions, layer) -> None:
    """residual_diffmean steers with directions= at layer=; every other method with neurons=."""
    if residual:
        if directions is None or layer is None:
            raise LapeEvalError(f"method={RESIDUAL_DIFFMEAN} adds a direction to one decoder layer's output: give "
                                "directions=PATH (a file made by `lape-eval directions`) and layer=N (the decoder "
                                "layer, 0-based) in --model_args.")
        if neurons is not None:
            raise LapeEvalError(f"method={RESIDUAL_DIFFMEAN} steers with directions=, not with a neuron set: drop "
                                "neurons= (one run steers one way).")
    elif directions is not None or layer is not None:
        raise LapeEvalError(f"directions= and layer= are used by method={RESIDUAL_DIFFMEAN} only; add "
                            f"method={RESIDUAL_DIFFMEAN} to steer the residual stream, or drop them to steer neurons.")


def _layer_number(value) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not number.is_integer():
        raise LapeEvalError(f"layer must be a whole number, the 0-based decoder layer (got {value!r}).")
    return int(number)


class _SteeredPrompt(str):
    """A prompt that carries its document's steer spec through HFLM's reordering and batching.

    HFLM sorts, groups and batches the ``(prompt, gen_kwargs)`` pairs of a ``generate_until`` call
    itself; a ``str`` passes through all of it as text (sorting, tokenising, stop handling and the
    cache hook see the plain prompt), and the spec rides along to :meth:`LapeLM.tok_batch_encode`."""

    spec: SteerSpec

    def __new__(cls, text: str, spec: SteerSpec):
        prompt = super().__new__(cls, text)
        prompt.spec = spec
        return prompt


_LOST_TRACK = ("This is a bug in lape-eval, or a change in lm-eval's HFLM that it does not know (it is tested "
               "with lm-eval 0.4.13): please report it with the lm-eval version.")


@register_model("lape")
class LapeLM(HFLM):
    # Private switches for benchmarks/bench_steering.py (grid): generate one HFLM call per spec, as
    # before row-wise batching, and generate identical greedy requests again each time.
    _rowwise_generation = True
    _deduplicate = True

    def __init__(
        self,
        pretrained,
        neurons: str | None = None,
        steer: str | None = None,
        method: str = "add",
        alpha: float = 1.0,
        beta: float = 1.0,
        deactivate_value: float = 0.0,
        positions: str = "all",
        language_alphas: str | None = None,
        doc_template: str = DEFAULT_DOC_TEMPLATE,
        neuron_delta: str | None = None,
        directions: str | None = None,
        layer: int | None = None,
        **kwargs,
    ):
        # Everything a user can get wrong is checked before the (slow) model load.
        self._args = check_lape_arguments(
            neurons=neurons, steer=steer, method=method, alpha=alpha, beta=beta, deactivate_value=deactivate_value,
            positions=positions, language_alphas=language_alphas, doc_template=doc_template,
            neuron_delta=neuron_delta, tp_plan=kwargs.get("tp_plan"), directions=directions, layer=layer)
        self._parsed: dict[str, SteerSpec] = {}  # steer text of documents -> spec
        self._compiled: dict[SteerSpec, object] = {}
        self._batch_specs: list | None = None  # the specs of the generation batch being encoded, in row order
        self._scoring: SteeringHandle | None = None  # log-likelihood steering whose positions come from the rows
        self._context_lengths: dict | None = None  # scored input tokens -> context length, for _model_call
        self._probing = False  # inside HFLM's batch-size detection (made-up batches)
        if isinstance(pretrained, str):
            pretrained = resolve_pretrained(pretrained)
        super().__init__(pretrained=pretrained, **kwargs)
        self._prepare_loaded_model()
        log.info("lape: steer=%s neurons=%s", "doc" if self._args.per_document else self._args.global_spec,
                 neurons)

    def _prepare_loaded_model(self) -> None:
        """Merge the neuron delta, find the neuron sites, and check what needs the loaded model."""
        if self._args.neuron_delta is not None:
            self._args.neuron_delta[1].apply(self.model)
        steers_with = self._args.neuron_set if self._args.neuron_set is not None else self._args.directions
        self._sites = resolve(self.model) if steers_with is not None else None
        if steers_with is not None:
            steers_with.check_model(self.model)
        if self._args.per_document and self.world_size > 1 and getattr(self, "batch_schedule", 1) != 1:
            # Log-likelihoods run one HFLM call per spec, HFLM re-detects auto:N batch sizes at
            # request positions, and ranks hold groups of different sizes: they would wait for each
            # other's detections forever.
            raise LapeEvalError("steer=doc with data parallelism needs batch_size=auto or a number, not "
                                f"auto:N (got auto:{self.batch_schedule:g}).")

    def set_cache_hook(self, cache_hook) -> None:
        if self._args.per_document and getattr(cache_hook, "dbdict", None) is not None:
            raise LapeEvalError(
                "steer=doc cannot use lm-eval's response cache (--use_cache): it keys each answer by the "
                "request's prompt and settings alone, so documents that ask the same question with different "
                "steer specs would share one cached answer. Run without --use_cache (--cache_requests, which "
                "caches the built requests with their documents, works)."
            )
        super().set_cache_hook(cache_hook)

    # --- which spec applies to which request ------------------------------------------------

    def _specs_of(self, requests: list[Instance]) -> list[SteerSpec]:
        """Each request's spec; with steer=doc every one is checked against the set before anything runs."""
        if not self._args.per_document:
            return [self._args.global_spec] * len(requests)
        return [self._document_spec(request) for request in requests]

    def _document_spec(self, request: Instance) -> SteerSpec:
        doc = request.doc or {}
        text = doc.get("steer")
        if text is None:
            try:
                text = self._args.doc_template.format(**doc)
            except (KeyError, IndexError) as error:
                raise LapeEvalError(
                    f"steer=doc: document {request.doc_id} of task '{request.task_name}' has no field {error} "
                    f"needed by doc_template={self._args.doc_template!r} (fields: {', '.join(sorted(doc))}). Give "
                    "the documents a 'steer' field or set doc_template to use their fields."
                ) from None
        text = str(text)
        if text not in self._parsed:
            try:
                spec = parse_steer(text, **self._args.steer_args)
                self._compiled_spec(spec)  # the set has its languages (and means, if needed)
            except LapeEvalError as error:
                raise LapeEvalError(f"steer=doc: document {request.doc_id} of task '{request.task_name}' asks "
                                    f"for the steer spec {text!r}, which cannot be applied: {error}") from None
            self._parsed[text] = spec
        return self._parsed[text]

    def _compiled_spec(self, spec: SteerSpec):
        if spec not in self._compiled:
            if self._args.residual:
                self._compiled[spec] = compile_residual(spec, self._args.directions, self._args.layer)
            else:
                self._compiled[spec] = compile_steer(spec, self._args.neuron_set, self._sites)
        return self._compiled[spec]

    def _handle_for(self, spec: SteerSpec) -> SteeringHandle | None:
        if spec.is_identity:
            return None
        return SteeringHandle(self.model, self._compiled_spec(spec), self._sites)

    def _grouped(self, requests: list[Instance], specs: list[SteerSpec], run):
        """``run(requests, spec)`` once per spec over the requests that use it; results in request order."""
        groups: dict[str, list[int]] = defaultdict(list)
        by_key: dict[str, SteerSpec] = {}
        for position, spec in enumerate(specs):
            by_key.setdefault(repr(spec), spec)
            groups[repr(spec)].append(position)
        results: list = [None] * len(requests)
        keys = list(groups)
        if self._args.per_document and self.world_size > 1:
            keys = self._keys_of_every_rank(keys)
        for key in keys:
            positions = groups.get(key)
            if positions is None:
                # Another data-parallel rank has requests with this spec and this one has none. HFLM
                # makes collective calls inside a request method (batch-size detection, padding of
                # rolling windows), so every rank must make the same calls in the same order: run one
                # stand-in request (output dropped, kept out of lm-eval's request cache) where a rank
                # has nothing to do.
                cache_hook, self.cache_hook = self.cache_hook, CacheHook(None)
                try:
                    run(requests[:1], specs[0] if specs else self._args.global_spec)
                finally:
                    self.cache_hook = cache_hook
                continue
            outputs = run([requests[i] for i in positions], by_key[key])
            for position, output in zip(positions, outputs):
                results[position] = output
        return results

    def _keys_of_every_rank(self, keys: list[str]) -> list[str]:
        """The union of the ranks' steer specs, in the same order on every rank."""
        import torch.distributed as dist

        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, keys)
        return sorted({key for rank_keys in gathered for key in rank_keys})

    # --- log-likelihoods: one HFLM call per spec, positions from each row's context length -----

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        score = super().loglikelihood
        return self._grouped(requests, self._specs_of(requests),
                             lambda group, spec: self._scored(group, spec, score, disable_tqdm, rows_known=True))

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        specs = self._specs_of(requests)
        self._refuse_positions_without_a_split(requests, specs)
        score = super().loglikelihood_rolling
        return self._grouped(requests, specs,
                             lambda group, spec: self._scored(group, spec, score, disable_tqdm, rows_known=False))

    def _scored(self, requests, spec: SteerSpec, score, disable_tqdm: bool, rows_known: bool):
        """``score`` (an HFLM method) under ``spec``; with ``rows_known`` (a context/continuation split),
        positions other than ``all`` are set from each row in :meth:`_model_call`."""
        handle = self._handle_for(spec)
        if handle is None:
            return score(requests, disable_tqdm=disable_tqdm)
        self._scoring = handle if rows_known and spec.positions != "all" else None
        try:
            return score(requests, disable_tqdm=disable_tqdm)
        finally:
            self._scoring = None
            handle.remove()

    def _refuse_positions_without_a_split(self, requests, specs: list[SteerSpec]) -> None:
        for request, spec in zip(requests, specs):
            if not spec.is_identity and spec.positions in ("answer", "generated"):
                raise LapeEvalError(
                    f"positions={spec.positions} has no meaning for the loglikelihood_rolling requests of task "
                    f"'{request.task_name}' (perplexity-style scoring): they score every token of a text, with no "
                    "context/continuation split, so nothing is an answer or generated. Use positions=all or "
                    "positions=prompt (both steer every token of the text), or run that task separately."
                )

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if self._scoring is None:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        inputs = [_scored_input(context, continuation, self.max_length) for _, context, continuation in requests]
        rounds = _rounds(inputs)
        if len(rounds) > 1 and self.world_size > 1 and self.batch_size == "auto":
            raise LapeEvalError(
                f"positions={self._scoring.tracker.positions} with data parallelism and batch_size=auto: two "
                "requests feed the same tokens with different context lengths, so they must be scored in separate "
                "passes, and the ranks would then detect batch sizes a different number of times. Give a fixed "
                "batch_size."
            )
        results: list = [None] * len(requests)
        for indices in rounds:
            self._context_lengths = {inputs[i][0]: inputs[i][1] for i in indices}
            try:
                outputs = super()._loglikelihood_tokens([requests[i] for i in indices], disable_tqdm=disable_tqdm,
                                                        override_bs=override_bs)
            finally:
                self._context_lengths = None
            for i, output in zip(indices, outputs):
                results[i] = output
        return results

    def _model_call(self, inps, attn_mask=None, labels=None):
        if self._context_lengths is None or self._probing:
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)
        mask = _position_mask(inps, self._context_lengths, self._scoring.tracker.positions)
        with self._scoring.given_mask(mask):
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    def _detect_batch_size(self, requests=None, pos: int = 0):
        # Its probe batches are made-up rows (all ones), not requests: no row has a context to find.
        self._probing = True
        try:
            return super()._detect_batch_size(requests, pos)
        finally:
            self._probing = False

    # --- generation: one HFLM loop over all specs, each batch row steered by its own spec --------

    def generate_until(self, requests, disable_tqdm: bool = False):
        specs = self._specs_of(requests)
        if self._rowwise_generation:
            return self._generate(requests, specs, disable_tqdm)
        return self._grouped(requests, specs,
                             lambda group, spec: self._generate(group, [spec] * len(group), disable_tqdm))

    def _generate(self, requests, specs: list[SteerSpec], disable_tqdm: bool = False):
        """HFLM's generation over the requests, each prompt carrying its spec into its batch row.

        Greedy decoding of the same prompt under the same spec gives the same text: each distinct
        request is generated once (a forcing grid asks every question once per target language;
        unsteered, those requests are identical).
        """
        keys, unique = [], {}
        for position, (request, spec) in enumerate(zip(requests, specs)):
            context, gen_kwargs = request.args
            greedy = not gen_kwargs.get("do_sample", False)
            if greedy and self._deduplicate:
                key = (context, json.dumps(gen_kwargs, sort_keys=True, default=str), spec)
            else:
                key = position
            keys.append(key)
            if key not in unique:
                unique[key] = replace(request, arguments=(_SteeredPrompt(context, spec), gen_kwargs))
        outputs = dict(zip(unique, super().generate_until(list(unique.values()), disable_tqdm=disable_tqdm)))
        return [outputs[key] for key in keys]

    def tok_batch_encode(self, strings, *args, **kwargs):
        # HFLM encodes each generation batch's prompts right before generating them: the specs they
        # carry are this batch's rows, in order.
        self._batch_specs = [getattr(text, "spec", None) for text in strings]
        return super().tok_batch_encode([str(text) for text in strings], *args, **kwargs)

    def _model_generate(self, context, *args, **kwargs):
        specs, self._batch_specs = self._batch_specs, None
        handle = self._batch_steering(specs, context.shape[0])
        try:
            return super()._model_generate(context, *args, **kwargs)
        finally:
            if handle is not None:
                handle.remove()

    def _batch_steering(self, specs: list | None, rows: int) -> SteeringHandle | None:
        """The steering of one generation batch: one spec for all rows, or one per row."""
        if specs is None or any(spec is None for spec in specs):
            if self._args.per_document:
                raise LapeEvalError(f"steer=doc: a generation batch of {rows} rows reached the model without its "
                                    f"documents' steer specs. {_LOST_TRACK}")
            specs = [self._args.global_spec] * rows
        if len(specs) != rows:
            raise LapeEvalError(f"steer=doc: a generation batch of {rows} rows came with {len(specs)} steer specs. "
                                f"{_LOST_TRACK}")
        distinct = list(dict.fromkeys(specs))
        if all(spec.is_identity for spec in distinct):
            return None
        if len(distinct) == 1:
            return self._handle_for(distinct[0])
        if self._args.residual:
            rowwise = compile_residual_rowwise(specs, self._args.directions, self._args.layer, compiled=self._compiled)
        else:
            rowwise = compile_rowwise(specs, self._args.neuron_set, self._sites, compiled=self._compiled)
        return SteeringHandle(self.model, rowwise, self._sites)

    # --- provenance ---------------------------------------------------------------------------

    def get_model_info(self) -> dict:
        info = super().get_model_info()
        steer = {"per_document": self._args.per_document, **self._args.steer_args,
                 **self._args.global_spec.describe()}
        if self._args.per_document:
            steer["steer"] = PER_DOCUMENT
            steer["doc_template"] = self._args.doc_template
        if self._args.neuron_set is not None:
            ns = self._args.neuron_set
            steer["neuron_set"] = {"source": self._args.neurons_source, "content_hash": ns.content_hash,
                                   "languages": ns.languages, "model": ns.info.get("model"),
                                   "selection": ns.info.get("selection")}
        if self._args.directions is not None:
            directions = self._args.directions
            steer["directions"] = {"source": self._args.directions_source, "content_hash": directions.content_hash,
                                   "languages": directions.languages, "model": directions.info.get("model"),
                                   "layer": self._args.layer}
        if self._args.neuron_delta is not None:
            steer["neuron_delta"] = {"source": self._args.neuron_delta[0], **self._args.neuron_delta[1].describe()}
        info["lape"] = steer
        return info


# --- log-likelihood rows: which input tokens are context ---------------------------------------


def _strip_padding(tokens) -> tuple[int, ...]:
    """HFLM right-pads log-likelihood batches with token 0: a row and its unpadded input agree after
    dropping trailing zeros."""
    end = len(tokens)
    while end and tokens[end - 1] == 0:
        end -= 1
    return tuple(tokens[:end])


def _scored_input(context: list[int], continuation: list[int], max_length: int) -> tuple[tuple[int, ...], int]:
    """The tokens HFLM feeds for a (context, continuation) pair (as a padding-free key) and how many
    of them are context. HFLM feeds ``(context + continuation)[-(max_length + 1):][:-1]``: truncated
    from the left, the continuation's last token dropped (it is only predicted)."""
    whole = context + continuation
    kept = whole[-(max_length + 1):]
    return _strip_padding(kept[:-1]), max(len(context) - (len(whole) - len(kept)), 0)


def _rounds(inputs: list[tuple[tuple[int, ...], int]]) -> list[list[int]]:
    """Split requests into HFLM calls in which equal input tokens always have the same context length.

    A row is recognised in ``_model_call`` by its tokens alone, and HFLM may even score two requests
    with equal inputs in one row; if their contexts differ in length (``"a b" + " c"`` vs ``"a" + " b c"``)
    they need different masks and go to separate calls. Nearly always there is one call."""
    rounds: list[tuple[dict, list[int]]] = []
    for index, (key, context_length) in enumerate(inputs):
        for lengths, indices in rounds:
            if lengths.setdefault(key, context_length) == context_length:
                indices.append(index)
                break
        else:
            rounds.append(({key: context_length}, [index]))
    return [indices for _, indices in rounds]


def _position_mask(inps, context_lengths: dict, positions: str):
    """[rows, tokens] bool: the positions ``positions`` names in each right-padded row of ``inps``."""
    lengths = []
    for row in inps.tolist():
        key = _strip_padding(row)
        if key not in context_lengths:
            raise LapeEvalError("A log-likelihood batch holds a row that matches none of its requests, so the "
                                f"positions to steer (positions={positions}) are unknown. {_LOST_TRACK}")
        lengths.append(context_lengths[key])
    columns = torch.arange(inps.shape[1], device=inps.device).unsqueeze(0)
    context = torch.tensor(lengths, device=inps.device).unsqueeze(1)
    if positions == "prompt":
        return columns < context
    if positions == "generated":
        return columns >= context
    return columns >= context - 1  # answer: the last context token predicts the first continuation token
