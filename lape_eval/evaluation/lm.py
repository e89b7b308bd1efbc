"""The lm-eval model ``lape``: Hugging Face's ``hf`` model with language-neuron steering.

``lm_eval --model lape --model_args pretrained=...,neurons=...,steer='-en +de'`` evaluates the
model with the steer spec applied to every forward pass (log-likelihoods and generation). Every
HFLM argument works as with ``hf`` (``peft``, ``dtype``, ``batch_size``, ``device``,
``parallelize``, ...). With no ``steer`` the model behaves exactly like ``hf``. ``neuron_delta=PATH``
merges a subnetwork fine-tune (``lape-eval finetune``) into the weights after loading; it composes
with ``peft`` and with steering.

``steer=doc`` steers per document: the spec comes from the document's ``steer`` field, or else from
``doc_template`` (default ``-{source_lang} +{target_lang}``) filled with the document's fields.
Requests are grouped by spec so that one run with one model load evaluates a whole grid.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass

from lm_eval.api.instance import Instance
from lm_eval.api.model import CacheHook
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM

from lape_eval.adapters.delta import NeuronDelta
from lape_eval.arch import resolve
from lape_eval.errors import LapeEvalError
from lape_eval.models import resolve_pretrained
from lape_eval.neurons.shipped import resolve_neuron_set
from lape_eval.steering.hooks import SteeringHandle, compile_steer
from lape_eval.steering.spec import SteerSpec, parse_steer

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

    @property
    def steers(self) -> bool:
        return self.per_document or not self.global_spec.is_identity


def check_lape_arguments(*, neurons=None, steer=None, method="add", alpha=1.0, beta=1.0, deactivate_value=0.0,
                         positions="all", language_alphas=None, doc_template=DEFAULT_DOC_TEMPLATE,
                         neuron_delta=None, tp_plan=None) -> LapeArguments:
    """Everything a user can get wrong in the ``lape`` model's arguments, checked without the model."""
    steer_args = dict(method=method, alpha=alpha, beta=beta, deactivate_value=deactivate_value,
                      positions=positions, language_alphas=language_alphas)
    per_document = str(steer).strip().lower() == PER_DOCUMENT if steer is not None else False
    global_spec = parse_steer(None if per_document else steer, **steer_args)
    neuron_set = None if neurons is None else resolve_neuron_set(str(neurons))
    arguments = LapeArguments(steer_args, per_document, NAMED_DOC_TEMPLATES.get(str(doc_template), str(doc_template)),
                              global_spec, None if neurons is None else str(neurons), neuron_set,
                              None if neuron_delta is None else (str(neuron_delta), NeuronDelta.load(str(neuron_delta))))
    if neuron_set is None and arguments.steers:
        raise LapeEvalError("steer= needs a neuron set: add neurons=PATH (or the name of a shipped set) "
                            "to --model_args.")
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


@register_model("lape")
class LapeLM(HFLM):
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
        **kwargs,
    ):
        # Everything a user can get wrong is checked before the (slow) model load.
        self._args = check_lape_arguments(
            neurons=neurons, steer=steer, method=method, alpha=alpha, beta=beta, deactivate_value=deactivate_value,
            positions=positions, language_alphas=language_alphas, doc_template=doc_template,
            neuron_delta=neuron_delta, tp_plan=kwargs.get("tp_plan"))
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
        self._sites = resolve(self.model) if self._args.neuron_set is not None else None
        if self._args.neuron_set is not None:
            self._args.neuron_set.check_model(self._sites)
        self._compiled: dict[str, object] = {}
        if self._args.per_document and self.world_size > 1 and getattr(self, "batch_schedule", 1) != 1:
            # HFLM re-detects auto:N batch sizes at request positions, and ranks hold groups of
            # different sizes: they would wait for each other's detections forever.
            raise LapeEvalError("steer=doc with data parallelism needs batch_size=auto or a number, not "
                                f"auto:N (got auto:{self.batch_schedule:g}).")

    # --- which spec applies to which request ------------------------------------------------

    def _spec_for(self, request: Instance) -> SteerSpec:
        if not self._args.per_document:
            return self._args.global_spec
        doc = request.doc or {}
        text = doc.get("steer")
        if text is None:
            try:
                text = self._args.doc_template.format(**doc)
            except (KeyError, IndexError) as error:
                raise LapeEvalError(
                    f"steer=doc: the document of task '{request.task_name}' has no field {error} needed by "
                    f"doc_template={self._args.doc_template!r} (fields: {', '.join(sorted(doc))}). Give the "
                    "documents a 'steer' field or set doc_template to use their fields."
                ) from None
        return parse_steer(text, **self._args.steer_args)

    def _handle_for(self, spec: SteerSpec) -> SteeringHandle | None:
        if spec.is_identity:
            return None
        key = repr(spec)
        if key not in self._compiled:
            self._compiled[key] = compile_steer(spec, self._args.neuron_set, self._sites)
        return SteeringHandle(self.model, self._compiled[key], self._sites)

    def _grouped(self, requests: list[Instance], run, **kwargs):
        """Run ``run`` once per steer spec over the requests that use it; results in request order."""
        groups: dict[str, list[int]] = defaultdict(list)
        specs: dict[str, SteerSpec] = {}
        for position, request in enumerate(requests):
            spec = self._spec_for(request)
            specs.setdefault(repr(spec), spec)
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
                    run(requests[:1], **kwargs)
                finally:
                    self.cache_hook = cache_hook
                continue
            handle = self._handle_for(specs[key])
            try:
                outputs = run([requests[i] for i in positions], **kwargs)
            finally:
                if handle is not None:
                    handle.remove()
            for position, output in zip(positions, outputs):
                results[position] = output
        return results

    def _keys_of_every_rank(self, keys: list[str]) -> list[str]:
        """The union of the ranks' steer specs, in the same order on every rank."""
        import torch.distributed as dist

        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, keys)
        return sorted({key for rank_keys in gathered for key in rank_keys})

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._grouped(requests, super().loglikelihood, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._grouped(requests, super().loglikelihood_rolling, disable_tqdm=disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._grouped(requests, self._generate_unique, disable_tqdm=disable_tqdm)

    def _generate_unique(self, requests, disable_tqdm: bool = False):
        """Greedy decoding of the same prompt gives the same text: generate each distinct request once.

        A forcing grid asks every question once per target language; unsteered (or steered with the
        same spec) those requests are identical.
        """
        keys, unique = [], {}
        for request in requests:
            context, gen_kwargs = request.args
            greedy = not gen_kwargs.get("do_sample", False)
            key = (context, json.dumps(gen_kwargs, sort_keys=True, default=str)) if greedy else id(request)
            keys.append(key)
            unique.setdefault(key, request)
        outputs = dict(zip(unique, super().generate_until(list(unique.values()), disable_tqdm=disable_tqdm)))
        return [outputs[key] for key in keys]

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
        if self._args.neuron_delta is not None:
            steer["neuron_delta"] = {"source": self._args.neuron_delta[0], **self._args.neuron_delta[1].describe()}
        info["lape"] = steer
        return info
