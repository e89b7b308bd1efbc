"""What a fine-tuning run records about itself: its identity (``run.json``: a folder resumes only a run
with the same one), each adapter's provenance (``finetune.json``, and a neuron delta's metadata) and
the run's summary (``summary.json``). The files themselves are written by
:class:`lape_eval.adapters.run_folder.RunFolder` and :mod:`lape_eval.adapters.adapter_folder`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lape_eval import __version__
from lape_eval.adapters.delta import hidden_size
from lape_eval.adapters.methods import Method
from lape_eval.adapters.progress import TrainingProgress
from lape_eval.adapters.settings import FinetuneSettings
from lape_eval.arch import NeuronSites


def run_identity(settings: FinetuneSettings, *, model_name: str, revision: str | None, dtype: str | None,
                 world: int, neuron_set) -> dict:
    """What ``run.json`` records: a folder resumes only a run with the same identity."""
    return {"model": model_name, "revision": revision, "dtype": dtype, "world_size": world,
            "neuron_set": neuron_set.content_hash if neuron_set is not None else None, **settings.identity()}


@dataclass
class RunDescription:
    """What a run is, fixed for its whole length: recorded in every adapter and in the summary."""

    settings: FinetuneSettings
    identity: dict
    model_name: str
    revision: str | None
    sites: NeuronSites
    neuron_set: object | None
    total_steps: int | None
    world: int

    def adapter_info(self, method: Method, progress: TrainingProgress, step: int, loss: float | None) -> dict:
        """The adapter's provenance (``finetune.json``; a neuron delta's metadata too)."""
        s, sites = self.settings, self.sites
        return {
            "kind": "lape-eval finetune adapter",
            "method": s.method,
            "language": s.language,
            "base_model": {"id": self.model_name, "revision": self.revision, "model_type": sites.model_type,
                           "num_layers": sites.num_layers, "width": sites.width, "hidden_size": hidden_size(sites),
                           "mlp_kind": sites.family.mlp_kind},
            "neuron_set": self._neuron_set_info(),
            "random_seed": self.identity.get("random_seed"),
            "data": {"corpus": s.corpus.describe(),
                     "heldout": (s.heldout_corpus.describe() if s.heldout_corpus else
                                 f"fraction {s.heldout_fraction} of the corpus documents"),
                     "max_tokens": s.max_tokens, "epochs": s.epochs, "seq_len": s.seq_len,
                     "tokens_seen": progress.tokens, "sequences_seen": progress.sequences},
            "training": {"step": step, "total_steps": self.total_steps, "lr": s.learning_rate,
                         "weight_decay": s.weight_decay, "clip": s.clip, "schedule": s.schedule,
                         "warmup_steps": s.warmup_steps, "batch_size": s.batch_size, "world_size": self.world,
                         "seed": s.seed, "bf16": s.bf16, "dtype": self.identity.get("dtype")},
            "heldout_loss": loss,
            "trainable_parameters": method.parameter_count,
            "tool_version": __version__,
        }

    def _neuron_set_info(self) -> dict | None:
        neuron_set, language = self.neuron_set, self.settings.language
        if neuron_set is None:
            return None
        return {"source": self.settings.neurons, "content_hash": neuron_set.content_hash,
                "languages": neuron_set.languages, "model": (neuron_set.info.get("model") or {}).get("id"),
                "top_rate": (neuron_set.info.get("selection") or {}).get("top_rate"),
                "neurons_of_language": (neuron_set.neuron_count(language)
                                        if language in neuron_set.languages else None)}

    def summary(self, method: Method, progress: TrainingProgress, final_loss: float | None,
                total_parameters: int) -> dict:
        """``summary.json``."""
        s = self.settings
        return {
            "method": s.method, "language": s.language, "model": self.model_name,
            "trainable_parameters": method.parameter_count, "total_parameters": total_parameters,
            "trainable_fraction": method.parameter_count / max(1, total_parameters),
            "parameter_formula": method.describe_count(), "steps": progress.step, "tokens": progress.tokens,
            "heldout": {"initial": progress.initial_loss, "best": progress.best_loss,
                        "best_step": progress.best_step, "final": final_loss},
            "history": progress.history, "adapter": "best", "adapter_kind": method.adapter,
            "neurons": method.neuron_count,
            "identity": self.identity,
        }
