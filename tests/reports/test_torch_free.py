"""The reports read JSON files: importing them must not import torch or safetensors (seconds of start-up
for `lape-eval table` and the CI gate, and a machine with only the report tools needs neither)."""

from __future__ import annotations

import json
import subprocess
import sys

REPORT_MODULES = ("table", "plots", "regress", "fallback", "results", "outcomes", "significance", "render",
                  "task_languages", "relevance")


def test_report_modules_import_neither_torch_nor_safetensors():
    imports = "; ".join(f"import lape_eval.reports.{name}" for name in REPORT_MODULES)
    probe = f"import json, sys; {imports}; print(json.dumps(sorted(m for m in ('torch', 'safetensors') if m in sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []
