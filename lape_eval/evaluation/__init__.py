"""Evaluation through lm-evaluation-harness: the ``lape`` model, its registration hook, the task suite
(YAML generation, loaders, metrics, language ID), the forcing protocol and the calibration sweep.
"""
