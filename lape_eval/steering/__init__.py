"""Steering with language neurons: the spec language (torch-free), the hooks that apply it, the
calibration file format, ablation, and export to lm-eval's built-in ``steered`` model.
"""
