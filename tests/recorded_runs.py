"""The recorded lm-eval runs of tests/data/report_runs (written by tests/data/make_report_fixtures.py)
and how the report tests read them: the files themselves, and the `lape-eval` command run on them."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from click.testing import CliRunner

from lape_eval.cli import cli

RUNS = Path(__file__).parent / "data" / "report_runs"
SET = RUNS / "tiny-llama-udhr-25pct.safetensors"
TABLE_RUNS = ["base", "minus-en-plus-de", "plus-fr", "plus-en", "lora"]
FALLBACK = ["fallback-0", "fallback-1", "fallback-2", "fallback-3", "fallback-11"]


def invoke(*args, expect: int | None = 0):
    """``lape-eval ARGS`` in this process; ``expect``: the exit code it must end with (None: any)."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, result.output
    return result


def runs(*names) -> list[str]:
    """The folders of the named recorded runs (default: the five of the comparison table)."""
    return [str(RUNS / name) for name in (names or TABLE_RUNS)]


def results_json(name: str) -> dict:
    return json.loads(next((RUNS / name).rglob("results_*.json")).read_text(encoding="utf-8"))


def samples(name: str, task: str) -> list[dict]:
    path = next((RUNS / name).rglob(f"samples_{task}_*.jsonl"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def files_under(folder: Path) -> list[Path]:
    """Every file below ``folder`` (to check that a failed command wrote nothing)."""
    return sorted(path for path in Path(folder).rglob("*") if path.is_file())


def table_csv(*args) -> dict[str, dict[str, str]]:
    rows = list(csv.reader(io.StringIO(invoke("table", *args, "--format", "csv").output)))
    header = rows[0]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows[1:]}


def check_png(path: Path, min_side: int = 300) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert min(image.shape[:2]) >= min_side
    assert image[..., :3].std() > 0.05  # not a blank canvas


def check_svg(path: Path, *texts: str) -> None:
    root = ElementTree.parse(path).getroot()
    assert root.tag.endswith("svg")
    content = path.read_text(encoding="utf-8")
    for text in texts:
        assert text in content, text
