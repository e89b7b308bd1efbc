"""Atomic file writes and JSON files (no torch: reports and the spec language use them).

Every artifact lape-eval writes goes through :func:`atomic_path`: the content is written to a
temporary file in the target folder and renamed over the target, so an interrupted or failed run
never leaves a half-written file that looks complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from lape_eval.errors import LapeEvalError


@contextlib.contextmanager
def atomic_path(target: Path):
    """Yield a temporary path next to ``target``; rename it onto ``target`` if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(target: Path, data: dict) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LapeEvalError(f"The {what} {path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LapeEvalError(f"The {what} {path} is not valid JSON ({error}); it may be truncated.") from None
