"""Neuron sets shipped with lape-eval (package ``lape_eval.neuron_sets``)."""
