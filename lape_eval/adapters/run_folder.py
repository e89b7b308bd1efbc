"""A fine-tuning run's output folder, and the one reader/writer of its JSON files::

    OUT/run.json            what the run is (arguments that define it); resuming requires the same
    OUT/checkpoint.pt       latest resumable state (removed when the run finishes; lape_eval.adapters.checkpoint)
    OUT/best/               adapter with the lowest held-out loss (neuron_delta.safetensors | PEFT | model)
    OUT/last/               adapter of the last step (with --save-last)
    OUT/log.jsonl           one line per step and per evaluation
    OUT/summary.json        parameter counts and losses, written when the run finishes

Looking at a folder (:meth:`RunFolder.state`) writes nothing, so a command can refuse a folder before
it loads a model; :meth:`RunFolder.start` writes ``run.json`` once every input has been checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lape_eval import __version__
from lape_eval.errors import LapeEvalError
from lape_eval.files import read_json, write_json

RUN_FORMAT = "lape-eval/finetune-run"
RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.pt"
SUMMARY_FILE = "summary.json"
LOG_FILE = "log.jsonl"


@dataclass
class FinetuneResult:
    out_dir: Path
    method: str
    trainable_parameters: int
    total_parameters: int
    parameter_formula: str
    steps: int
    tokens: int
    heldout: dict  # initial, best, best_step, final
    adapter: Path
    summary: dict


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def best(self) -> Path:
        return self.path / "best"

    @property
    def last(self) -> Path:
        return self.path / "last"

    def state(self, identity: dict) -> str:
        """'new', 'resume' or 'finished'; refuses a folder that holds anything else. Writes nothing."""
        run_file = self.path / RUN_FILE
        if not run_file.exists():
            if self.path.exists() and any(self.path.iterdir()):
                raise LapeEvalError(
                    f"The output folder {self.path} is not empty and holds no {RUN_FILE}: it is not a lape-eval "
                    "fine-tuning run. Choose a new or empty folder with --out."
                )
            return "new"
        data = read_json(run_file, "fine-tuning run file")
        if data.get("format") != RUN_FORMAT:
            raise LapeEvalError(f"{run_file} is not a lape-eval fine-tuning run file (format {data.get('format')!r}).")
        existing = json.loads(json.dumps(data.get("identity")))
        mine = json.loads(json.dumps(identity))
        differences = [f"{key}: {existing.get(key)!r} there, {mine.get(key)!r} now"
                       for key in sorted(set(existing) | set(mine)) if existing.get(key) != mine.get(key)]
        if differences:
            raise LapeEvalError(
                f"The output folder {self.path} holds another fine-tuning run ({'; '.join(differences)}). Resuming "
                "with different arguments would mix two runs: use the original arguments to resume, or another "
                "--out folder (or delete this one) to start a new run."
            )
        return "finished" if self.summary.exists() else ("resume" if self.checkpoint.exists() else "new")

    def start(self, identity: dict, state: str) -> None:
        """Record the run (``state`` from :meth:`state`); a new run drops the log of one stopped before its
        first checkpoint."""
        if not (self.path / RUN_FILE).exists():
            write_json(self.path / RUN_FILE, {"format": RUN_FORMAT, "tool_version": __version__, "identity": identity})
        if state == "new":
            (self.path / LOG_FILE).unlink(missing_ok=True)

    def log(self, record: dict) -> None:
        with open(self.path / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop the lines after ``step`` (written after the checkpoint a resumed run starts from)."""
        path = self.path / LOG_FILE
        if path.exists():
            lines = [line for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip() and json.loads(line).get("step", 0) <= step]
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")

    def finish(self, summary: dict) -> None:
        write_json(self.summary, summary)
        self.checkpoint.unlink(missing_ok=True)

    def result(self) -> FinetuneResult:
        """The finished run, from its summary."""
        summary = read_json(self.summary, "fine-tuning summary")
        return FinetuneResult(self.path, summary["method"], summary["trainable_parameters"],
                              summary["total_parameters"], summary["parameter_formula"], summary["steps"],
                              summary["tokens"], summary["heldout"], self.best, summary)
