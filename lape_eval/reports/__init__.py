"""Reports from lm-eval results: discovery of runs, comparison tables with significance, the
regression gate, forcing/fallback outcomes and plots. Reads recorded runs without torch.
"""
