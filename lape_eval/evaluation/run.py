"""``lape-eval run``: lm-eval's own command line, with lape-eval's model and tasks available.

Every argument goes to lm-eval unchanged. Before lm-eval starts, the lape-eval task names in
``--tasks`` are checked (an unknown language code fails here, before any model is loaded) and the
translation pairs that ``tasks/`` does not ship are written into a temporary folder. The ``lape``
model checks its own arguments before it loads the model (:mod:`lape_eval.evaluation.lm`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lape_eval.evaluation.registration import register_lape_model
from lape_eval.evaluation.suite import prepare_on_demand_tasks
from lape_eval.resources import tasks_folder


def run_lm_eval(argv: list[str]) -> None:
    """Run lm-eval's command line ``lm_eval ARGV`` in this process, knowing lape-eval's tasks."""
    on_demand = prepare_on_demand_tasks(list(argv))  # unknown language codes fail here
    import lm_eval.models  # noqa: F401  built-in models first, then ours (see evaluation.registration)
    from lm_eval.__main__ import cli_evaluate

    register_lape_model()
    index_task_folder(tasks_folder())
    if on_demand is not None:
        index_task_folder(on_demand)
    saved, sys.argv = sys.argv, ["lm_eval", *argv]  # lm-eval's command line reads sys.argv itself
    try:
        cli_evaluate()
    finally:
        sys.argv = saved


def index_task_folder(folder: Path | str) -> None:
    """Make every lm-eval ``TaskManager`` created afterwards in this process also index ``folder``.

    Why a patch of ``TaskManager.__init__``: lm-eval's command line builds its TaskManager itself,
    with the one ``--include_path`` the user gave (if any), and offers no other way in. Prepending our
    folder to that argument keeps the user's folders (theirs win on a name clash, lm-eval indexes
    later paths over earlier ones). Each call wraps the previous ``__init__``, so several folders add up.
    """
    from lm_eval.tasks import TaskManager

    original = TaskManager.__init__

    def __init__(self, *args, include_path=None, **kwargs):
        paths = [] if include_path is None else list(include_path) if isinstance(include_path, (list, tuple)) else [include_path]
        original(self, *args, include_path=[str(folder), *paths], **kwargs)

    TaskManager.__init__ = __init__
