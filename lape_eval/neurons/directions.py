"""Residual DiffMean direction artifacts: per language and decoder layer, the mean residual-stream vector.

CLaS-Bench's DiffMean (method spec §9.2) steers with the difference of two languages' mean
residual-stream vectors at one layer. A direction artifact holds what it needs: one ``.safetensors``
file with the float64 tensor ``means`` [languages, layers, hidden] (the mean output hidden state of
each decoder layer, ``lape_eval.arch.RESIDUAL_POINT``, over a language's counted tokens: BOS and
padding never count) and JSON metadata in the header: the model, the languages in row order, the
corpus and tokens per language, provenance, and a content hash that :meth:`ResidualDirections.load`
verifies (the same hash as a neuron set's, ``lape_eval.neurons.neuron_set.content_hash``).

The means stay float64 (the sums are exact float64, ``collect --residual-means``): the difference of
two large, nearly equal means loses digits that float32 would not keep.

:meth:`ResidualDirections.direction` is the steering direction: ``mean(target) − mean(source)`` (or,
without a source, ``mean(target)`` minus the unweighted mean over the artifact's other languages, as
the neuron method ``diffmean`` does), L2-normalised. When the two means are equal (``-en +en``) the
direction is the zero vector: such a spec steers nothing, as in the reference code (which divides by
``norm + 1e-8``), so the diagonal cells of a grid are unsteered.

This module is the artifact (one reader/writer) and its construction from statistics folders
(:func:`directions_from_statistics`, the ``lape-eval directions`` command); steering with it is
``lape_eval.steering.residual``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lape_eval import __version__
from lape_eval.arch import RESIDUAL_POINT
from lape_eval.errors import LapeEvalError
from lape_eval.neurons.identify import statistics_info_of
from lape_eval.neurons.neuron_set import content_hash, read_verified_file
from lape_eval.neurons.stats import load_statistics
from lape_eval.tensor_files import save_tensors

DIRECTIONS_FORMAT = "lape-eval/residual-directions"
FORMAT_VERSION = 1
_SHAPE_KEYS = ("format", "format_version", "languages", "num_layers", "hidden_size")


@dataclass
class ResidualDirections:
    """Mean residual-stream vectors of one model, per language and decoder layer."""

    languages: list[str]
    means_table: torch.Tensor  # float64 [K, L, H], rows in `languages` order
    info: dict = field(default_factory=dict)  # "model", "statistics", "provenance" (JSON)

    @property
    def num_layers(self) -> int:
        return self.means_table.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.means_table.shape[2]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_layers, self.hidden_size)

    @property
    def model_id(self) -> str:
        return (self.info.get("model") or {}).get("id") or "unknown model"

    def mean(self, lang: str, layer: int) -> torch.Tensor:
        """[H] float64: the mean output hidden state of decoder layer ``layer`` over ``lang``'s tokens."""
        return self.means_table[self._row(lang), self.check_layer(layer)]

    def direction(self, target: str, source: str | None, layer: int) -> torch.Tensor:
        """[H] float64 unit vector ``normalise(mean(target) − mean(source))`` at ``layer``; without a
        source the mean over the other languages replaces ``mean(source)``; zero when they are equal."""
        if source is None:
            others = [lang for lang in self.languages if lang != self._known(target)]
            if not others:
                raise LapeEvalError(
                    f"The direction artifact holds only '{target}', so '+{target}' without a source language has "
                    "nothing to subtract: write the source ('-en +{target}') or use an artifact with more languages."
                    .replace("{target}", target))
            rest = torch.stack([self.mean(lang, layer) for lang in others]).mean(0)
        else:
            rest = self.mean(source, layer)
        difference = self.mean(target, layer) - rest
        norm = torch.linalg.vector_norm(difference)
        return difference / norm if norm > 0 else torch.zeros_like(difference)

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < self.num_layers:
            raise LapeEvalError(
                f"Layer {layer!r} is out of range: the direction artifact ({self.model_id}) has decoder layers "
                f"0 to {self.num_layers - 1}. Give layer=N with 0 ≤ N < {self.num_layers}."
            )
        return layer

    def check_model(self, target) -> None:
        """Refuse a model (or a (layers, hidden size) pair) of another shape than the artifact's."""
        if isinstance(target, tuple):
            shape = target
        else:
            from lape_eval.arch import resolve, residual_width

            shape = (resolve(target).num_layers, residual_width(target))
        if tuple(shape) != self.shape:
            raise LapeEvalError(
                f"The direction artifact is for {self.num_layers} layers × hidden size {self.hidden_size} "
                f"({self.model_id}); the model has {shape[0]} layers × hidden size {shape[1]}. Use directions "
                "made (`lape-eval collect --residual-means`, then `lape-eval directions`) on this model."
            )

    # ---- file format -------------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"means": self.means_table}

    def metadata_without_hash(self) -> dict:
        return {"format": DIRECTIONS_FORMAT, "format_version": FORMAT_VERSION, "languages": self.languages,
                "num_layers": self.num_layers, "hidden_size": self.hidden_size, **self.info}

    @property
    def content_hash(self) -> str:
        return content_hash(self.tensors(), self.metadata_without_hash())

    @property
    def metadata(self) -> dict:
        return {**self.metadata_without_hash(), "content_hash": self.content_hash}

    def save(self, path: Path | str) -> Path:
        """Write the artifact atomically."""
        _validate(self, Path(path))
        save_tensors(Path(path), self.tensors(), self.metadata)
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> "ResidualDirections":
        """Read and verify a direction file: format, content hash, then structure."""
        path = Path(path)
        tensors, metadata = read_verified_file(
            path, what="direction artifact", file_format=DIRECTIONS_FORMAT, version=FORMAT_VERSION,
            how_to_make="Make one with `lape-eval directions STATS_DIR --out FILE` from `collect --residual-means` "
                        "statistics.",
            how_to_remake="Re-create it with `lape-eval directions`.")
        if set(tensors) != {"means"} or not isinstance(metadata.get("languages"), list):
            raise LapeEvalError(f"{path} is not a valid direction artifact: it must hold exactly the tensor "
                                f"'means' and a language list (it holds {sorted(tensors)}).")
        directions = cls(list(metadata["languages"]), tensors["means"],
                         {k: v for k, v in metadata.items() if k not in _SHAPE_KEYS})
        _validate(directions, path, recorded_shape=(metadata.get("num_layers"), metadata.get("hidden_size")))
        return directions

    # ---- helpers -----------------------------------------------------------------------------------

    def _known(self, lang: str) -> str:
        if lang not in self.languages:
            raise LapeEvalError(
                f"The direction artifact has no language '{lang}' (it has: {', '.join(self.languages)}). Collect "
                f"residual means for '{lang}' (`lape-eval collect --residual-means`) and make the artifact again."
            )
        return lang

    def _row(self, lang: str) -> int:
        return self.languages.index(self._known(lang))


def _validate(directions: ResidualDirections, path: Path, recorded_shape: tuple | None = None) -> None:
    """Structural checks, so that a malformed artifact fails here, not mid-steering."""
    def fail(problem: str):
        raise LapeEvalError(f"{path} is not a valid direction artifact: {problem}.")

    languages, means = directions.languages, directions.means_table
    if not languages or len(set(languages)) != len(languages):
        fail(f"its language list {languages} is empty or has duplicates")
    if means.dtype != torch.float64 or means.dim() != 3 or means.shape[0] != len(languages):
        fail(f"'means' must be float64 [{len(languages)}, layers, hidden], not {means.dtype} {tuple(means.shape)}")
    if means.shape[1] < 1 or means.shape[2] < 1:
        fail(f"its shape {tuple(means.shape)} is empty")
    if recorded_shape is not None and tuple(recorded_shape) != directions.shape:
        fail(f"its metadata says {recorded_shape[0]} layers × {recorded_shape[1]}, its tensor {directions.shape}")
    if not bool(torch.isfinite(means).all()):
        fail("'means' holds non-finite values")


def directions_from_statistics(statistics_dirs: list[Path], languages: list[str] | None = None,
                               created_by: dict | None = None) -> ResidualDirections:
    """The direction artifact of the residual sums in ``statistics_dirs`` (``collect --residual-means``)."""
    table = load_statistics(list(statistics_dirs), languages)
    if table.residual_sums is None:
        raise LapeEvalError(
            f"The statistics in {', '.join(map(str, statistics_dirs))} hold no residual-stream sums for "
            f"{', '.join(table.without_residual_sums)}: they were collected without --residual-means. Collect "
            "again with `lape-eval collect --residual-means` into a new folder (it records the neuron statistics too)."
        )
    means = table.residual_sums / table.tokens.clamp(min=1).view(-1, 1, 1).double()
    model, statistics = statistics_info_of(table, table.languages)
    model = {key: value for key, value in model.items() if key != "activation_point"}
    model["residual_point"] = RESIDUAL_POINT
    info = {"model": model, "statistics": statistics,
            "provenance": {"tool_version": __version__, "created_by": json.loads(json.dumps(created_by))}}
    return ResidualDirections(list(table.languages), means.contiguous(), info)

