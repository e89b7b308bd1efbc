"""Files shipped with the package: the task YAMLs (``tasks/``), the neuron sets (``neuron_sets/``) and
the data files of ``lape_eval/data/`` (the bundled UDHR, the calibration questions, the demo's
calibration).

In the repository ``tasks/`` and ``neuron_sets/`` are top-level folders; in a wheel they are the
packages ``lape_eval.tasks`` and ``lape_eval.neuron_sets``. Everything resolves to a real path on disk.
Every reader of a shipped file finds it here, so that a change of layout is made in one place.
"""

from __future__ import annotations

from pathlib import Path

from lape_eval.errors import LapeEvalError

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


def shipped_data_file(name: str) -> Path:
    """``shipped_data_file("udhr.jsonl")`` → the file ``lape_eval/data/udhr.jsonl`` of this installation."""
    try:
        from importlib.resources import files

        path = Path(str(files("lape_eval") / "data" / name))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        path = _CHECKOUT / "lape_eval" / "data" / name
    if not path.is_file():
        raise LapeEvalError(f"lape-eval's data file {name} is missing from this installation (looked for {path}); "
                            "reinstall lape-eval.")
    return path
