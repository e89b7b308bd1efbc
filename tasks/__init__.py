"""Task YAMLs for lm-eval, shipped inside the wheel as the package ``lape_eval.tasks``."""
