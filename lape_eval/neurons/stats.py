"""Per-language activation statistics: how often each MLP neuron's gated activation is positive.

For every layer l and neuron j we accumulate, over the counted tokens of one language,
``positive_counts[l, j] = #{tokens: g_lj > 0}``, ``activation_sums[l, j] = Σ g_lj`` and the token
count (method spec §4.3). Padding and the BOS position never count. Accumulators are int64 and
float64 whatever the model dtype (each batch is summed in float32 first, which is exact enough for a
few thousand tokens and keeps the hook cheap).

With ``residual_means`` (``collect --residual-means``) the same counted tokens also give
``residual_sums[l, :] = Σ h_l``, the sum of decoder layer l's output hidden state (the residual
stream, ``lape_eval.arch.RESIDUAL_POINT``), summed in float64 from the start: the residual stream is
only ``hidden_size`` wide, so exactness costs little there. They are what residual DiffMean
directions are made of (:mod:`lape_eval.neurons.directions`).

A collection folder holds ``manifest.json`` (the model, corpus and settings every file in it was
made with: ``lape_eval.neurons.manifest``, written together with the folder's first statistics file)
and one ``<lang>.safetensors`` per finished language. While a language is running, a
``<lang>.partial.safetensors`` checkpoint is written every ``checkpoint_every`` steps; a restarted
run resumes from it, skipping exactly the sequences it already holds, so nothing is lost or counted
twice. Under ``torch.distributed`` (``torchrun``/``accelerate launch``) each rank takes every
world-size-th batch of the same deterministic stream and the counts are summed exactly at the end.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import torch

from lape_eval import __version__
from lape_eval.arch import ACTIVATION_POINT, NeuronSites, residual_width, resolve, unwrap_model
from lape_eval.distributed import Distributed
from lape_eval.errors import LapeEvalError
from lape_eval.tensor_files import load_tensors, save_tensors
from lape_eval.languages import PAPER_LANGUAGES, parse_languages
from lape_eval.neurons.corpus import (CorpusSpec, bos_token_to_prepend, make_batch, packed_sequences, pad_token_id,
                                      token_stream)
from lape_eval.neurons.manifest import MANIFEST, STATS_FORMAT, CollectionIdentity, read_manifest, write_manifest

log = logging.getLogger(__name__)


@dataclass
class LanguageStats:
    language: str
    tokens: int
    positive_counts: torch.Tensor  # [L, I] int64
    activation_sums: torch.Tensor  # [L, I] float64
    residual_sums: torch.Tensor | None = None  # [L, H] float64, with collect --residual-means

    @property
    def mean_activation(self) -> torch.Tensor:
        return self.activation_sums / max(self.tokens, 1)

    @property
    def activation_probability(self) -> torch.Tensor:
        return self.positive_counts.double() / max(self.tokens, 1)


class ActivationRecorder:
    """Forward hooks on the activation modules that accumulate the statistics of counted tokens.

    Call :meth:`set_count_mask` before each forward pass. Use as a context manager; the hooks are
    removed on exit even if the forward raises.

    The hook is on the hot path (once per layer and batch), so it avoids the slow generic reductions
    where it can. A batch whose uncounted positions all sit in the first column (full packed rows,
    with or without a BOS there: every batch of ``collect`` but a language's last) takes the
    *matmul path*: with ``w`` the [B, T] count mask as float32,

    * ``counts += w_flat @ (g > 0)``: one GEMV over a float32 0/1 copy of ``g > 0`` written into a
      reused scratch buffer. Every partial sum is an integer below 2**24, hence exact in float32: the
      counts are bit-identical to ``(g[mask] > 0).sum(0)``;
    * ``sums += Σ_b (w_b @ g_b)``: one batched GEMV per sequence, then the per-sequence sums added in
      float64 (as accurate as the float32 ``sum`` of the gathered rows; no gather copy). Uncounted
      positions enter with weight 0, so they must be finite: a BOS position is, in any working
      model; padding (whose activations need not be) never takes this path.

    It is about 3x cheaper than ``index_select`` + ``(g > 0).sum(0)`` (a bool -> int64 column
    reduction) + ``g.sum(0)``. Other batches (padding inside rows), batches of 2**24 positions or more,
    and float32 matmuls at reduced precision (TF32 / bf16, which would round ``g``) take the plain
    path: gather the counted rows, reduce.
    """

    def __init__(self, sites: NeuronSites, device: torch.device | str, residual_width: int | None = None):
        num_layers, width = sites.shape
        self.sites = sites
        self.positive_counts = torch.zeros(num_layers, width, dtype=torch.int64, device=device)
        self.activation_sums = torch.zeros(num_layers, width, dtype=torch.float64, device=device)
        self.tokens = torch.zeros(1, dtype=torch.int64, device=device)
        # Residual-stream sums (decoder layer outputs), when asked for: [L, H] float64.
        self.residual_sums = (None if residual_width is None else
                              torch.zeros(num_layers, residual_width, dtype=torch.float64, device=device))
        self._residual_rows: torch.Tensor | None = None  # counted rows of the flattened batch (None: all)
        self._rows: torch.Tensor | None = None  # plain path: counted rows of the flattened batch (None: all)
        self._weights: torch.Tensor | None = None  # matmul path: [B, 1, T] float32 count mask
        self._scratch: torch.Tensor | None = None  # matmul path: float32 buffer of g's shape, reused
        # (one batch of one layer's activations: O(batch x width), whatever the corpus size)
        self._handles: list = []

    def set_count_mask(self, count_mask: torch.Tensor) -> None:
        flat = count_mask.reshape(-1)
        self.tokens += flat.sum()
        self._rows = self._weights = None
        if self.residual_sums is not None:
            self._residual_rows = None if bool(flat.all()) else flat.nonzero().squeeze(1)
        if (count_mask.dim() == 2 and flat.numel() < _EXACT_FLOAT32_INTEGERS
                and _full_precision_float32_matmul(count_mask.device) and bool(count_mask[:, 1:].all())):
            self._weights = count_mask.to(torch.float32).unsqueeze(1)
        elif not bool(flat.all()):
            self._rows = flat.nonzero().squeeze(1)

    def _hook(self, layer: int):
        counts, sums = self.positive_counts[layer], self.activation_sums[layer]

        def record(module, args, output):
            g = output.detach()
            if self._weights is not None:
                self._record_matmul(g, counts, sums)
                return
            g = g.reshape(-1, g.shape[-1])
            if self._rows is not None:
                g = g.index_select(0, self._rows)
            counts.add_((g > 0).sum(0, dtype=torch.int32))  # int32: much faster than the default int64
            sums.add_(g.sum(0, dtype=torch.float32))

        return record

    def _residual_hook(self, layer: int):
        sums = self.residual_sums[layer]

        def record(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output  # some layers return a tuple
            hidden = hidden.detach().reshape(-1, hidden.shape[-1])
            if self._residual_rows is not None:
                hidden = hidden.index_select(0, self._residual_rows)
            sums.add_(hidden.sum(0, dtype=torch.float64))  # every value enters in float64: exact to ~1e-16

        return record

    def _record_matmul(self, g: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor) -> None:
        weights = self._weights  # [B, 1, T]
        batch, _, length = weights.shape
        g = g.reshape(batch, length, g.shape[-1])
        scratch = self._scratch
        if scratch is None or scratch.shape != g.shape or scratch.device != g.device:
            scratch = self._scratch = torch.empty(g.shape, dtype=torch.float32, device=g.device)
        # Other dtypes are summed from a float32 copy (as ``g.sum(0, dtype=float32)`` would); the
        # comparison is always made in g's own dtype, so the counts stay exact for every dtype.
        values = g if g.dtype == torch.float32 else scratch.copy_(g)
        sums.add_(torch.bmm(weights, values).sum((0, 1), dtype=torch.float64))
        positive = torch.gt(g, 0, out=scratch)  # 1.0 where g > 0, else 0.0
        counts.add_((weights.view(1, -1) @ positive.view(batch * length, -1)).view(-1).to(torch.int64))

    def __enter__(self):
        self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.sites.activations)]
        if self.residual_sums is not None:
            self._handles += [m.register_forward_hook(self._residual_hook(i)) for i, m in enumerate(self.sites.layers)]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state(self) -> list[torch.Tensor]:
        """The accumulators, in the order of ``STATE_NAMES`` (the residual sums only when recorded)."""
        state = [self.positive_counts, self.activation_sums, self.tokens]
        return state if self.residual_sums is None else [*state, self.residual_sums]

    def reset(self) -> None:
        for tensor in self.state():
            tensor.zero_()


STATE_NAMES = ("positive_counts", "activation_sums", "tokens", "residual_sums")  # a checkpoint's tensors
_EXACT_FLOAT32_INTEGERS = 2**24  # float32 holds every integer up to here exactly


def _full_precision_float32_matmul(device: torch.device) -> bool:
    """Whether float32 matmuls on ``device`` run in full float32 (no TF32 / bf16 rounding of inputs)."""
    if device.type not in ("cpu", "cuda"):
        return False
    try:
        if torch.get_float32_matmul_precision() != "highest":
            return False
        return device.type == "cpu" or not torch.backends.cuda.matmul.allow_tf32
    except RuntimeError:  # precision set through the new per-backend API: do not guess
        return False


def _reduce_to_main(recorder: ActivationRecorder, dist: Distributed) -> None:
    """Sum every rank's accumulators into rank 0's and zero the others (no double counting)."""
    if dist.world == 1:
        return
    for tensor in recorder.state():
        dist.sum_to_main_(tensor)
    if not dist.main:
        recorder.reset()


@dataclass
class CollectSettings:
    corpus: CorpusSpec
    seq_len: int = 512
    batch_size: int = 8
    max_tokens: int | None = None
    add_bos: str | bool = "auto"
    checkpoint_every: int = 20  # steps between partial checkpoints
    progress: bool = True
    residual_means: bool = False  # also sum the residual stream (decoder layer outputs)

    def check(self, languages: list[str]) -> None:
        """Refuse impossible settings, and a corpus that cannot give every language's text, before
        any model work or file is written."""
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise LapeEvalError(f"The token budget per language must be positive (got {self.max_tokens}).")
        if self.batch_size < 1:
            raise LapeEvalError(f"The batch size must be at least 1 (got {self.batch_size}).")
        if self.seq_len < 2:
            raise LapeEvalError(f"The sequence length must be at least 2 tokens (got {self.seq_len}).")
        if self.checkpoint_every < 1:
            raise LapeEvalError(f"Checkpoints must be at least one step apart (got {self.checkpoint_every}).")
        self.corpus.check(languages)


class StatisticsFolder:
    """A collection folder on disk: ``manifest.json``, ``<lang>.safetensors`` per finished language and
    ``<lang>.partial.safetensors`` checkpoints.

    :meth:`claim` only checks; the manifest is written together with the folder's first statistics
    file. A run that fails before it has counted anything (a bad corpus, a model that does not load)
    therefore leaves no manifest that would refuse the next, corrected run; a manifest without any
    statistics file (left by older versions) is likewise replaced by the next claim.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._manifest_to_write: CollectionIdentity | None = None

    def final_file(self, lang: str) -> Path:
        return self.path / f"{lang}.safetensors"

    def partial_file(self, lang: str) -> Path:
        return self.path / f"{lang}.partial.safetensors"

    def identity(self) -> CollectionIdentity | None:
        return read_manifest(self.path)

    def holds_statistics(self) -> bool:
        """Whether any finished or partial statistics file is in the folder."""
        return any(self.path.glob("*.safetensors"))

    def check_usable(self) -> CollectionIdentity | None:
        """Read-only: refuse a path that cannot be a statistics folder; return its manifest's identity."""
        if self.path.exists() and not self.path.is_dir():
            raise LapeEvalError(f"The output folder {self.path} is a file. Choose a new or empty folder.")
        existing = self.identity()
        if existing is None and self.holds_statistics():
            raise LapeEvalError(
                f"The output folder {self.path} holds .safetensors files but no {MANIFEST}: it is not "
                "a lape-eval statistics folder. Choose an empty or new output folder."
            )
        return existing

    def claim(self, identity: CollectionIdentity) -> None:
        """Use this folder for ``identity``; refuse a folder that holds another setup's statistics."""
        existing = self.check_usable()
        if existing is not None and self.holds_statistics():
            differences = identity.differences(existing)
            if differences:
                raise LapeEvalError(
                    f"The output folder {self.path} holds statistics made with other settings "
                    f"({'; '.join(differences)}). Mixing them would make the statistics meaningless: choose "
                    "another output folder, or delete this one to start over."
                )
        self._manifest_to_write = None if existing == identity else identity

    def finished_languages(self) -> list[str]:
        return sorted(p.name[: -len(".safetensors")] for p in self.path.glob("*.safetensors")
                      if not p.name.endswith(".partial.safetensors"))

    def save_language(self, stats: LanguageStats, extra: dict) -> None:
        self._write_claimed_manifest()
        tensors = {"positive_counts": stats.positive_counts, "activation_sums": stats.activation_sums}
        if stats.residual_sums is not None:
            tensors["residual_sums"] = stats.residual_sums
        save_tensors(self.final_file(stats.language), tensors,
                     {"format": STATS_FORMAT, "language": stats.language, "tokens": stats.tokens, **extra})

    def load_language(self, lang: str) -> LanguageStats:
        tensors, meta = load_tensors(self.final_file(lang), "statistics file")
        if meta.get("format") != STATS_FORMAT or meta.get("language") != lang:
            raise LapeEvalError(f"{self.final_file(lang)} is not the statistics of language '{lang}'.")
        return LanguageStats(lang, int(meta["tokens"]), tensors["positive_counts"], tensors["activation_sums"],
                             tensors.get("residual_sums"))

    def save_partial(self, lang: str, state: list[torch.Tensor], sequences_done: int) -> None:
        """A resumable checkpoint: the accumulators (counts, sums, tokens[, residual sums]) after
        ``sequences_done`` sequences."""
        self._write_claimed_manifest()
        save_tensors(self.partial_file(lang), dict(zip(STATE_NAMES, state)),
                     {"format": STATS_FORMAT, "sequences_done": sequences_done})

    def load_partial(self, lang: str) -> tuple[list[torch.Tensor], int] | None:
        """The checkpoint's accumulators and sequence count, or None when there is no checkpoint."""
        path = self.partial_file(lang)
        if not path.exists():
            return None
        tensors, meta = load_tensors(path, "partial statistics checkpoint")
        return [tensors[name] for name in STATE_NAMES if name in tensors], int(meta["sequences_done"])

    def _write_claimed_manifest(self) -> None:
        if self._manifest_to_write is not None:
            write_manifest(self.path, self._manifest_to_write)
            self._manifest_to_write = None


def collect(
    model,
    tokenizer,
    languages: list[str] | str,
    out_dir: Path,
    settings: CollectSettings,
    *,
    model_name: str,
    revision: str | None = None,
) -> dict[str, LanguageStats]:
    """Collect statistics for each language into ``out_dir`` (resuming whatever is there)."""
    languages = parse_languages(languages)
    settings.check(languages)
    sites = resolve(model)
    bos_id = bos_token_to_prepend(tokenizer, settings.add_bos)
    identity = CollectionIdentity(
        model=model_name, revision=revision, model_type=sites.model_type,
        num_layers=sites.num_layers, width=sites.width, activation_point=ACTIVATION_POINT,
        corpus=settings.corpus.describe(), seq_len=settings.seq_len, bos_token_id=bos_id,
        max_tokens=settings.max_tokens, residual_means=settings.residual_means,
    )
    dist = Distributed.current()
    folder = StatisticsFolder(out_dir)
    if dist.rank == 0:
        folder.claim(identity)
    dist.barrier()
    results = {}
    for lang in languages:
        if folder.final_file(lang).exists():
            log.info("statistics for %s already in %s: skipped", lang, folder.path)
        else:
            _collect_language(model, sites, tokenizer, lang, folder, settings, bos_id, dist)
        dist.barrier()
        results[lang] = folder.load_language(lang)
    return results


def _collect_language(model, sites, tokenizer, lang, folder, settings, bos_id, dist) -> None:
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    decoder = unwrap_model(model).base_model  # the LM head is not needed for MLP statistics
    recorder = ActivationRecorder(sites, device, residual_width(model) if settings.residual_means else None)
    done = _resume(recorder, folder, lang, dist)
    sequences = packed_sequences(
        token_stream(settings.corpus.documents(lang), tokenizer, settings.max_tokens),
        seq_len=settings.seq_len, bos_id=bos_id,
    )
    sequences = islice(sequences, done, None)
    pad_id = pad_token_id(tokenizer)
    bar = tqdm(total=settings.max_tokens, initial=int(recorder.tokens), unit="tok", desc=f"collect {lang}",
               disable=not settings.progress or dist.rank != 0, dynamic_ncols=True)
    step = 0
    with recorder, torch.no_grad():
        while True:
            group = list(islice(sequences, settings.batch_size * dist.world))
            if not group:
                break
            mine = group[dist.rank * settings.batch_size : (dist.rank + 1) * settings.batch_size]
            if mine:
                batch = make_batch(mine, bos_id=bos_id, pad_id=pad_id)
                recorder.set_count_mask(batch.count_mask.to(device))
                decoder(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                        use_cache=False)
            done += len(group)
            step += 1
            bar.update(sum(len(s) for s in group))
            if step % settings.checkpoint_every == 0:
                _checkpoint(recorder, folder, lang, done, dist)
    bar.close()
    _reduce_to_main(recorder, dist)
    if dist.rank == 0:
        _save_language(recorder, folder, lang, settings, done)


def _save_language(recorder: ActivationRecorder, folder: StatisticsFolder, lang: str, settings: CollectSettings,
                   sequences: int) -> None:
    """Write a finished language's statistics (rank 0, after the reduction) and drop its checkpoint."""
    tokens = int(recorder.tokens)
    if tokens == 0:
        raise LapeEvalError(f"The corpus for language '{lang}' produced no tokens: check that it holds text.")
    if settings.max_tokens is not None and tokens < settings.max_tokens:
        warnings.warn(
            f"Language '{lang}': the corpus holds only {tokens:,} tokens, fewer than the "
            f"{settings.max_tokens:,} asked for; the statistics use (and record) {tokens:,}.",
            stacklevel=3,
        )
    residual = None if recorder.residual_sums is None else recorder.residual_sums.cpu()
    stats = LanguageStats(lang, tokens, recorder.positive_counts.cpu(), recorder.activation_sums.cpu(), residual)
    folder.save_language(stats, {"tokens_requested": settings.max_tokens, "sequences": sequences,
                                 "tool_version": __version__})
    folder.partial_file(lang).unlink(missing_ok=True)


def _checkpoint(recorder: ActivationRecorder, folder: StatisticsFolder, lang: str, sequences_done: int,
                dist: Distributed) -> None:
    _reduce_to_main(recorder, dist)
    if dist.rank == 0:
        folder.save_partial(lang, recorder.state(), sequences_done)
    dist.barrier()


def _resume(recorder: ActivationRecorder, folder: StatisticsFolder, lang: str, dist: Distributed) -> int:
    """Load a partial checkpoint into rank 0's accumulators; return the sequences it covers."""
    checkpoint = folder.load_partial(lang)
    if checkpoint is None:
        return 0
    state, sequences_done = checkpoint
    if len(state) != len(recorder.state()):  # the manifest's identity prevents this; never mix silently
        raise LapeEvalError(f"{folder.partial_file(lang)} holds {len(state)} accumulators, this run needs "
                            f"{len(recorder.state())} (with and without --residual-means mixed). Delete it to start "
                            "this language over.")
    if dist.rank == 0:
        for target, value in zip(recorder.state(), state):
            target.copy_(value)
    log.info("resuming %s after %d sequences", folder.partial_file(lang).name, sequences_done)
    return sequences_done


@dataclass
class StatisticsTable:
    """Statistics of several languages stacked along a language axis, ready for LAPE."""

    identity: CollectionIdentity
    languages: list[str]
    positive_counts: torch.Tensor  # [K, L, I] int64
    activation_sums: torch.Tensor  # [K, L, I] float64
    tokens: torch.Tensor  # [K] int64
    residual_sums: torch.Tensor | None = None  # [K, L, H] float64 when every language has them
    without_residual_sums: tuple[str, ...] = ()  # the languages whose files hold none

    @property
    def mean_activation(self) -> torch.Tensor:
        return self.activation_sums / self.tokens.clamp(min=1).view(-1, 1, 1)


def load_statistics(folders: list[Path] | Path, languages: list[str] | str | None = None) -> StatisticsTable:
    """Stack the statistics of ``languages`` (default: all found) from one or more folders."""
    folders = [Path(f) for f in ([folders] if isinstance(folders, (str, Path)) else folders)]
    identity, available = None, {}
    for folder in map(StatisticsFolder, folders):
        this = folder.identity()
        if this is None:
            raise LapeEvalError(f"{folder.path} is not a statistics folder (no {MANIFEST}); run `lape-eval collect` first.")
        # Whether residual sums were also recorded does not change the neuron statistics.
        differences = [] if identity is None else identity.differences(
            replace(this, residual_means=identity.residual_means))
        if differences:
            raise LapeEvalError(
                f"The statistics in {folder.path} were made with other settings than those in {folders[0]} "
                f"({'; '.join(differences)}); LAPE needs statistics of one model and corpus setup."
            )
        identity = this
        for lang in folder.finished_languages():
            available.setdefault(lang, folder)
    wanted = sorted(available, key=_paper_order) if languages is None else parse_languages(languages)
    missing = [lang for lang in wanted if lang not in available]
    if missing:
        raise LapeEvalError(
            f"No statistics for {', '.join(missing)} in {', '.join(map(str, folders))} (found: "
            f"{', '.join(sorted(available)) or 'none'}). Collect statistics for them first (`lape-eval collect` with these languages)."
        )
    stats = [available[lang].load_language(lang) for lang in wanted]
    for one in stats:
        if tuple(one.positive_counts.shape) != (identity.num_layers, identity.width):
            raise LapeEvalError(f"The statistics of '{one.language}' have shape {tuple(one.positive_counts.shape)}, "
                                f"the manifest says {(identity.num_layers, identity.width)}.")
    without_residual = tuple(s.language for s in stats if s.residual_sums is None)
    residual = None if without_residual else torch.stack([s.residual_sums for s in stats])
    return StatisticsTable(
        identity, wanted,
        torch.stack([s.positive_counts for s in stats]),
        torch.stack([s.activation_sums for s in stats]),
        torch.tensor([s.tokens for s in stats], dtype=torch.int64),
        residual, without_residual,
    )


def _paper_order(lang: str) -> tuple[int, str]:
    return (PAPER_LANGUAGES.index(lang), lang) if lang in PAPER_LANGUAGES else (len(PAPER_LANGUAGES), lang)
