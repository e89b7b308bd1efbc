"""lape-eval: language neurons (LAPE) for lm-evaluation-harness.

Importing the package is cheap on purpose (no torch, no transformers): the lm-eval model
registration hook runs in every Python process of an environment that has lape-eval installed.
"""

__version__ = "0.1.0"
