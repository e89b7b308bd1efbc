"""Adapter folders (a run's ``best/`` and ``last/``, ``lape-eval merge``'s output): written whole into a
staging folder and swapped in, with their provenance in ``finetune.json``, so a crash never leaves a
half-written adapter that looks complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lape_eval.files import write_json

PROVENANCE_FILE = "finetune.json"


def replace_folder(target: Path, write: Callable[[Path], object]) -> None:
    """Write a folder with ``write(tmp)`` and swap it in for ``target`` (the folder counterpart of
    :func:`lape_eval.files.atomic_path`)."""
    target = Path(target)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        write(staging)
        old = target.parent / f".{target.name}.old"
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_adapter_folder(target: Path, write_content: Callable[[Path], object], provenance: dict) -> None:
    """``target`` holding what ``write_content(folder)`` writes and ``finetune.json`` = ``provenance``."""

    def write(staging: Path) -> None:
        write_content(staging)
        write_json(staging / PROVENANCE_FILE, provenance)

    replace_folder(target, write)
