"""Make ``lm_eval --model lape`` work with the stock lm-eval command, at no cost to other programs.

lm-eval 0.4.13 has no plugin mechanism: its model registry is filled when ``lm_eval.models`` is
imported. The installed ``lape_eval_lm_eval.pth`` imports this module at interpreter start. It only
puts a tiny finder on ``sys.meta_path`` (no lm-eval, no torch), which waits for ``lm_eval.models``
to be imported and then registers ``lape`` as a lazy placeholder (``lape_eval.evaluation.lm:LapeLM``). Built-in
models keep working: we register *after* lm-eval's own placeholders (registering into an empty
registry would hide them, see lm-eval-host notes §1.4). Newer lm-eval versions with entry-point
plugins find the model through ``[project.entry-points."lm_eval.models"]`` instead.
"""

import sys

_WATCHED = "lm_eval.models"


def register_lape_model() -> None:
    from lm_eval.api.registry import model_registry

    if "lape" not in model_registry:
        model_registry.register("lape", target="lape_eval.evaluation.lm:LapeLM")


class _RegisterAfterLoad:
    """Loader wrapper: run the real loader, then register our model."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            register_lape_model()
        except Exception:  # never break lm-eval itself because of us
            pass

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _LmEvalModelsFinder:
    def find_spec(self, name, path=None, target=None):
        if name != _WATCHED:
            return None
        sys.meta_path.remove(self)  # one shot; also avoids finding ourselves below
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, path, target) if find_spec else None
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisterAfterLoad(spec.loader)
                return spec
        return None


def install() -> None:
    if _WATCHED in sys.modules:  # lm-eval was imported before us
        register_lape_model()
    elif not any(isinstance(f, _LmEvalModelsFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _LmEvalModelsFinder())


install()
