"""Folders shipped with the package: the task YAMLs (``tasks/``) and the neuron sets (``neuron_sets/``).

In the repository they are top-level folders; in a wheel they are the packages ``lape_eval.tasks``
and ``lape_eval.neuron_sets``. Both resolve to a real directory on disk.
"""

from __future__ import annotations

from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent


def shipped_folder(name: str) -> Path | None:
    """``shipped_folder("tasks")`` → the folder of package ``lape_eval.tasks`` (or the checkout's)."""
    try:
        from importlib.resources import files

        folder = Path(str(files(f"lape_eval.{name}")))
        if folder.is_dir():
            return folder
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    folder = _CHECKOUT / name  # editable installs may not expose the mapped package
    return folder if folder.is_dir() else None


def tasks_folder() -> Path:
    folder = shipped_folder("tasks")
    if folder is None:
        raise FileNotFoundError("lape-eval's task folder is missing from this installation; reinstall lape-eval.")
    return folder
