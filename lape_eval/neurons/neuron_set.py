"""Neuron-set artifacts: the language neurons of one top rate, with everything steering needs.

A neuron set is one ``.safetensors`` file (format described in ``neuron_sets/README.md``):

* ``indices.<lang>`` — int64, the sorted flat indices ``layer * width + neuron`` of that language's
  neurons (a neuron may belong to several languages);
* ``selected`` — int64, the sorted union of all languages' indices;
* ``means`` — float32 ``[K, len(selected)]``, the mean activation μ of every language of the set at
  every selected neuron (absent for sets imported without statistics: ``has_means`` is False).

Storing μ of *every* language at the union is what lets additive / replacement (μ of the target)
and diffmean (μ of the target minus the mean μ of the others) run from the file alone. The JSON
metadata in the safetensors header records the model, thresholds, corpus and provenance, and a
content hash over tensors and metadata that :meth:`NeuronSet.load` verifies.

This module is the artifact only. Sets are made from statistics by ``lape_eval.neurons.identify``,
found by name among the shipped sets by ``lape_eval.neurons.shipped``, converted from and to the
reference code's activation masks by ``lape_eval.neurons.reference_masks`` and tabulated by
``lape_eval.neurons.inspection``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lape_eval import __version__
from lape_eval.tensor_files import load_tensors, save_tensors
from lape_eval.errors import LapeEvalError

NEURON_SET_FORMAT = "lape-eval/neuron-set"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_HASH_PREFIX = "sha256:"


@dataclass
class NeuronSet:
    """Language neurons of one model and top rate.

    For steering language ``lang`` at layer ``l``: ``indices(lang)[l]`` are the neuron indices,
    ``means(lang)[l]`` μ of ``lang`` at them, ``means(lang, of=k)[l]`` μ of language ``k`` at them and
    ``mean_of_others(lang)[l]`` the mean μ of the set's other languages (diffmean).
    """

    languages: list[str]
    num_layers: int
    width: int
    flat: dict[str, torch.Tensor]  # lang -> sorted unique int64 flat indices layer * width + neuron
    selected: torch.Tensor  # sorted union of all flat indices, int64
    means_table: torch.Tensor | None  # float32 [K, len(selected)], rows in `languages` order
    info: dict = field(default_factory=dict)  # "model", "selection", "statistics", "provenance" (JSON)

    # ---- what steering needs -----------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_layers, self.width)

    @property
    def has_means(self) -> bool:
        return self.means_table is not None

    def flat_indices(self, lang: str) -> torch.Tensor:
        return self.flat[self._known(lang)]

    def indices(self, lang: str) -> list[torch.Tensor]:
        """Per layer, the sorted int64 neuron indices of ``lang`` (empty tensors where none)."""
        flat = self.flat_indices(lang)
        return list(torch.split(flat % self.width, self._per_layer(flat)))

    def means(self, lang: str, of: str | None = None) -> list[torch.Tensor]:
        """Per layer, μ of language ``of`` (default ``lang``) at ``lang``'s neurons (float32)."""
        of = self._known(lang if of is None else of)
        return self._split(self._means_at(lang)[self.languages.index(of)], lang)

    def mean_of_others(self, lang: str) -> list[torch.Tensor]:
        """Per layer, the mean over the set's other languages of μ at ``lang``'s neurons (diffmean)."""
        table = self._means_at(lang)
        others = [k for k, code in enumerate(self.languages) if code != lang]
        if not others:
            raise LapeEvalError(f"The neuron set holds only '{lang}': diffmean needs other languages.")
        return self._split(table[others].mean(0), lang)

    def neuron_count(self, lang: str) -> int:
        return self.flat_indices(lang).numel()

    @property
    def unique_neuron_count(self) -> int:
        return self.selected.numel()

    def check_model(self, target) -> None:
        """Refuse a model (or NeuronSites, or a (layers, width) pair) of another shape than the set's."""
        shape = _shape_of(target)
        if tuple(shape) != self.shape:
            model = (self.info.get("model") or {}).get("id") or "unknown model"
            raise LapeEvalError(
                f"The neuron set is for {self.num_layers} layers × {self.width} neurons ({model}); the model "
                f"has {shape[0]} layers × {shape[1]} neurons. Use a neuron set identified on this model."
            )

    def subset(self, languages: list[str]) -> "NeuronSet":
        """The same neurons and means for ``languages`` only (in that order).

        The thresholds stay those of the full language set (a subset of a selection is not the
        selection of a subset, spec §10 pitfall 7); the metadata records the original languages.
        """
        languages = language_list(languages)
        rows = language_rows(self.languages, languages, "neuron set")
        flat = {lang: self.flat[lang] for lang in languages}
        selected = union_of(flat.values())
        means = None
        if self.has_means:
            means = self.means_table[rows][:, torch.searchsorted(self.selected, selected)]
        info = json.loads(json.dumps(self.info))  # deep copy
        provenance = info.setdefault("provenance", {})
        provenance.setdefault("subset_of", {"languages": self.languages, "content_hash": self.content_hash})
        return NeuronSet(languages, self.num_layers, self.width, flat, selected, means, info)

    # ---- file format -------------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"indices.{lang}": self.flat[lang] for lang in self.languages}
        tensors["selected"] = self.selected
        if self.has_means:
            tensors["means"] = self.means_table
        return tensors

    def metadata_without_hash(self) -> dict:
        return {"format": NEURON_SET_FORMAT, "format_version": FORMAT_VERSION, "languages": self.languages,
                "num_layers": self.num_layers, "width": self.width, "has_means": self.has_means, **self.info}

    @property
    def content_hash(self) -> str:
        return content_hash(self.tensors(), self.metadata_without_hash())

    @property
    def metadata(self) -> dict:
        return {**self.metadata_without_hash(), "content_hash": self.content_hash}

    def save(self, path: Path | str) -> Path:
        """Write the set atomically (a failed write never leaves a half-written file)."""
        _validate(self, Path(path))
        save_tensors(Path(path), self.tensors(), self.metadata)
        return Path(path)

    @classmethod
    def load(cls, path: Path | str) -> "NeuronSet":
        """Read and verify a set file: format, content hash, then structure."""
        path = Path(path)
        tensors, metadata = read_verified_file(
            path, what="neuron set", file_format=NEURON_SET_FORMAT, version=FORMAT_VERSION,
            how_to_make="Make neuron sets with `lape-eval identify` or `lape-eval import-masks`.",
            how_to_remake="Re-create it (or download it again).")
        try:
            languages = list(metadata["languages"])
            neuron_set = cls(
                languages, int(metadata["num_layers"]), int(metadata["width"]),
                {lang: tensors[f"indices.{lang}"] for lang in languages}, tensors["selected"],
                tensors.get("means"),
                {k: v for k, v in metadata.items()
                 if k not in ("format", "format_version", "languages", "num_layers", "width", "has_means")},
            )
        except (KeyError, TypeError, ValueError) as error:
            raise LapeEvalError(f"{path} is an incomplete neuron set (missing {error}).") from None
        _validate(neuron_set, path, expected_tensors=set(tensors), has_means=metadata.get("has_means"))
        return neuron_set

    # ---- helpers -----------------------------------------------------------------------------------

    def _known(self, lang: str) -> str:
        if lang not in self.flat:
            raise LapeEvalError(f"The neuron set has no language '{lang}' (it has: {', '.join(self.languages)}).")
        return lang

    def _per_layer(self, flat: torch.Tensor) -> list[int]:
        return torch.bincount(flat // self.width, minlength=self.num_layers).tolist()

    def _split(self, values: torch.Tensor, lang: str) -> list[torch.Tensor]:
        return list(torch.split(values, self._per_layer(self.flat_indices(lang))))

    def _means_at(self, lang: str) -> torch.Tensor:
        """[K, n] μ of every language at ``lang``'s neurons."""
        if not self.has_means:
            raise LapeEvalError(
                "This neuron set has no mean activations (it was imported from the reference format without "
                "statistics), so additive, replacement and diffmean steering cannot use it. Re-import it together "
                "with statistics of the same model, or use deactivation."
            )
        return self.means_table[:, torch.searchsorted(self.selected, self.flat_indices(lang))]


def content_hash(tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """sha256 over the tensors (sorted by name: name, dtype, shape, little-endian C-order bytes) and
    the canonical JSON of the metadata without ``content_hash`` (see neuron_sets/README.md)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        digest.update(f"{name}\0{dtype}\0{json.dumps(list(tensor.shape))}\0".encode())
        array = tensor.numpy()
        digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest.update(b"metadata\0" + canonical.encode("utf-8"))
    return _HASH_PREFIX + digest.hexdigest()


def read_verified_file(path: Path, *, what: str, file_format: str, version: int, how_to_make: str,
                       how_to_remake: str) -> tuple[dict, dict]:
    """``(tensors, metadata without the hash)`` of a hashed lape-eval artifact (a neuron set, a direction
    artifact), after checking its format, its format version and then its content hash; each failure is
    a :class:`LapeEvalError` naming ``what`` the file should be and the fix."""
    tensors, metadata = load_tensors(path, f"{what} file")
    if metadata.get("format") != file_format:
        raise LapeEvalError(f"{path} is not a lape-eval {what} (its format is {metadata.get('format')!r}). "
                            f"{how_to_make}")
    if metadata.get("format_version") != version:
        raise LapeEvalError(
            f"{path} has {what} format version {metadata.get('format_version')!r}; this lape-eval "
            f"({__version__}) reads version {version}. Upgrade lape-eval."
        )
    stored = metadata.pop("content_hash", None)
    computed = content_hash(tensors, metadata)
    if stored != computed:
        raise LapeEvalError(
            f"{path} was modified or corrupted after it was written: its content hash does not match "
            f"(stored {stored}, computed {computed}). {how_to_remake}"
        )
    return tensors, metadata


def _validate(neuron_set: NeuronSet, path: Path, expected_tensors: set[str] | None = None,
              has_means: bool | None = None) -> None:
    """Structural checks, so that a consistent-looking but malformed set fails here, not mid-steering."""
    def fail(problem: str):
        raise LapeEvalError(f"{path} is not a valid neuron set: {problem}.")

    ns = neuron_set
    if not ns.languages or len(set(ns.languages)) != len(ns.languages):
        fail(f"its language list {ns.languages} is empty or has duplicates")
    if ns.num_layers < 1 or ns.width < 1:
        fail(f"its shape {ns.num_layers} × {ns.width} is empty")
    if expected_tensors is not None and expected_tensors != set(ns.tensors()):
        fail(f"it holds tensors {sorted(expected_tensors)}, expected {sorted(ns.tensors())}")
    if has_means is not None and bool(has_means) != ns.has_means:
        fail("its has_means flag does not match its tensors")
    total = ns.num_layers * ns.width
    for name, tensor in [*((f"indices.{k}", ns.flat[k]) for k in ns.languages), ("selected", ns.selected)]:
        if tensor.dtype != torch.int64 or tensor.dim() != 1:
            fail(f"'{name}' must be a 1-D int64 tensor, not {tensor.dtype} {tuple(tensor.shape)}")
        if tensor.numel() and (tensor[0] < 0 or tensor[-1] >= total or bool((tensor[1:] <= tensor[:-1]).any())):
            fail(f"'{name}' is not sorted, unique and within 0..{total - 1}")
    if not torch.equal(ns.selected, union_of(ns.flat.values())):
        fail("'selected' is not the union of the languages' indices")
    if ns.has_means and (ns.means_table.dtype != torch.float32
                         or tuple(ns.means_table.shape) != (len(ns.languages), ns.selected.numel())):
        fail(f"'means' must be float32 [{len(ns.languages)}, {ns.selected.numel()}], "
             f"not {ns.means_table.dtype} {tuple(ns.means_table.shape)}")


def flatten_layers(per_layer: list[torch.Tensor], width: int) -> torch.Tensor:
    """Per-layer neuron indices -> flat indices ``layer * width + neuron`` (in the given order)."""
    parts = [layer * width + idx.to(torch.int64) for layer, idx in enumerate(per_layer)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def union_of(tensors) -> torch.Tensor:
    """The sorted union of int64 flat-index tensors (an empty int64 tensor for none)."""
    tensors = list(tensors)
    return torch.unique(torch.cat(tensors)) if tensors else torch.zeros(0, dtype=torch.int64)  # sorted


def language_rows(available: list[str], wanted: list[str], what: str) -> list[int]:
    """Positions of ``wanted`` in ``available``; a missing language is an error naming ``what`` holds."""
    missing = [lang for lang in wanted if lang not in available]
    if missing:
        raise LapeEvalError(f"Language(s) {', '.join(missing)} not in the {what} (it has: {', '.join(available)}).")
    return [available.index(lang) for lang in wanted]


def language_list(languages) -> list[str]:
    """A non-empty list of distinct codes from a list or a comma/space-separated string (not checked
    against the language registry: a set may hold any codes its statistics had)."""
    languages = languages.replace(",", " ").split() if isinstance(languages, str) else list(languages)
    duplicates = sorted({code for code in languages if languages.count(code) > 1})
    if duplicates:
        raise LapeEvalError(f"Language(s) listed more than once: {', '.join(duplicates)}.")
    if not languages:
        raise LapeEvalError("No language given.")
    return languages


def _shape_of(target) -> tuple[int, int]:
    if isinstance(target, tuple):
        return target
    if isinstance(getattr(target, "shape", None), tuple):  # NeuronSites
        return target.shape
    from lape_eval.arch import resolve

    return resolve(target).shape
