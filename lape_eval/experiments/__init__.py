"""The paper's experiments, each as one command (``lape-eval experiment ...``).

An experiment plans the lm-eval runs of one of the paper's analyses (conditions x neuron sets x
languages), runs them through :mod:`lape_eval.evaluation` with the stock harness, and writes one
folder: the runs, a ``report.md``, CSVs and figures, made with :mod:`lape_eval.reports`. It sits
above reports and below the demo (which runs the forcing experiment's paper condition).
"""
