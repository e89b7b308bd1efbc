"""The manifest of a statistics folder (``manifest.json``, written by ``collect``): what every file in
the folder was computed from. :func:`read_manifest` and :func:`write_manifest` are its only reader
and writer.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from lape_eval import __version__
from lape_eval.errors import LapeEvalError
from lape_eval.files import read_json, write_json

STATS_FORMAT = "lape-eval/activation-statistics/v1"  # the manifest's and every statistics file's format
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CollectionIdentity:
    """What a collection folder's statistics were computed from; resuming requires the same."""

    model: str
    revision: str | None
    model_type: str
    num_layers: int
    width: int
    activation_point: str
    corpus: str
    seq_len: int
    bos_token_id: int | None
    max_tokens: int | None
    residual_means: bool = False  # the statistics files also hold residual-stream sums (collect --residual-means)

    def differences(self, other: "CollectionIdentity") -> list[str]:
        mine, theirs = asdict(self), asdict(other)
        return [f"{key}: {theirs[key]!r} there, {mine[key]!r} now" for key in mine if mine[key] != theirs[key]]


def read_manifest(folder: Path | str) -> CollectionIdentity | None:
    """The identity recorded in ``folder``'s manifest; None when the folder has no manifest."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    data = read_json(path, "statistics manifest")
    if not isinstance(data, dict) or data.get("format") != STATS_FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise LapeEvalError(f"{path} is not a lape-eval statistics manifest (format {found!r}).")
    recorded = data.get("identity")
    expected = {field.name for field in fields(CollectionIdentity)}
    # Fields added later have defaults; manifests written before them lack them and mean the default.
    required = {field.name for field in fields(CollectionIdentity) if field.default is MISSING}
    if not isinstance(recorded, dict) or not required <= set(recorded) <= expected:
        raise LapeEvalError(
            f"{path} is an incomplete or damaged statistics manifest (its identity does not hold exactly "
            f"{', '.join(sorted(expected))}). Collect into a new folder, or delete this one to start over."
        )
    return CollectionIdentity(**recorded)


def write_manifest(folder: Path | str, identity: CollectionIdentity) -> Path:
    """Write ``folder``'s manifest atomically (creating the folder)."""
    path = Path(folder) / MANIFEST
    write_json(path, {"format": STATS_FORMAT, "tool_version": __version__, "identity": asdict(identity)})
    return path
