"""A demo step: skipped, re-run or resumed by its recorded command; quiet (one line, output in its log)
or streaming (--verbose); a failure says where the output is."""

from __future__ import annotations

import io
import os
import shlex
import sys
import textwrap
from pathlib import Path

import pytest

from lape_eval.demo import DemoPlan, StepFailed, run_step
from lape_eval.demo.step_runner import ProgressReader, output_to_log


def _plan(tmp_path: Path, **options) -> tuple[DemoPlan, list[str]]:
    said: list[str] = []
    return DemoPlan(tmp_path, say=said.append, live=None, **options), said


def _writer(target: Path, text: str) -> list[str]:
    """A step command that appends ``text`` to ``target`` (so that a re-run is visible)."""
    return [sys.executable, "-c", f"open({str(target)!r}, 'a').write({text!r})"]


def _script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_a_step_is_skipped_only_when_its_command_is_unchanged(tmp_path):
    plan, said = _plan(tmp_path)
    out = tmp_path / "result.txt"
    run_step(plan, "step", _writer(out, "a"), outputs=[out])
    run_step(plan, "step", _writer(out, "a"), outputs=[out])
    assert out.read_text() == "a" and len(plan.log) == 1 and said[-1] == "✓ step (already done)"
    run_step(plan, "step", _writer(out, "b"), outputs=[out])  # options changed: old output removed, step re-run
    assert out.read_text() == "b" and len(plan.log) == 2


def test_an_interrupted_resumable_step_keeps_its_partial_output(tmp_path):
    plan, _ = _plan(tmp_path)
    partial = tmp_path / "stats.txt"
    partial.write_text("partial;")  # left by an interrupted run: no record of a finished command
    run_step(plan, "collect", _writer(partial, "rest"), outputs=[partial], resumable=True)
    assert partial.read_text() == "partial;rest"
    fresh = tmp_path / "table.txt"
    fresh.write_text("stale;")
    run_step(plan, "table", _writer(fresh, "new"), outputs=[fresh])  # not resumable: starts clean
    assert fresh.read_text() == "new"


# A command that logs as lm-eval does (INFO lines on stderr), prints a tqdm-style counter, then succeeds.
CHATTY = """
    import sys, time
    print("INFO lm_eval.evaluator: Building contexts", file=sys.stderr, flush=True)
    print("some stdout line", flush=True)
    time.sleep(0.7)
    sys.stderr.write("Running generate_until requests:  50%|#####     | 5/10 [00:01<00:01]\\r")
    sys.stderr.flush()
    time.sleep(1.3)
    open(sys.argv[1], "w").write("done")
"""


def test_a_quiet_step_shows_one_line_at_each_end_and_logs_everything(tmp_path):
    plan, said = _plan(tmp_path / "out")
    out = tmp_path / "out" / "forcing-steered"
    command = _script(CHATTY) + [str(out)]
    run_step(plan, "the grid", command, outputs=[out])
    log = plan.out / "logs" / "forcing-steered.log"
    text = log.read_text(encoding="utf-8")
    assert text.startswith(f"$ {shlex.join(command)}\n")  # the command first, to copy
    assert "INFO lm_eval.evaluator: Building contexts" in text and "some stdout line" in text and "5/10" in text
    assert len(said) == 2  # nothing of the command's own output reaches the terminal
    assert said[0] == f"▶ the grid … (log: {log})"
    assert said[1].startswith("✓ the grid  0:0") and said[1].endswith(f"log: {log}")
    assert out.read_text() == "done" and plan.log[0][0] == "the grid"


def test_on_a_terminal_the_line_is_redrawn_with_the_progress_and_ends_with_the_time(tmp_path):
    terminal = io.StringIO()
    plan, said = _plan(tmp_path / "out")
    plan.live = terminal
    out = tmp_path / "out" / "grid.txt"
    run_step(plan, "the grid", _script(CHATTY) + [str(out)], outputs=[out])
    drawn = terminal.getvalue().split("\r\x1b[K")
    # 5 of 10 requests done: half of the 20-character bar, then the counter and the phase it came from
    assert any("▶ the grid  [" + "█" * 10 + "·" * 10 + "] 5/10 Running generate_until requests" in d for d in drawn)
    log = plan.out / "logs" / "grid.log"
    assert drawn[-1].startswith("✓ the grid  0:0") and drawn[-1].endswith(f"log: {log}\n")
    assert said == []  # on a terminal the live line is the only output


def test_a_failed_quiet_step_shows_the_end_of_its_log_and_where_it_is(tmp_path):
    plan, said = _plan(tmp_path)
    out = tmp_path / "never.txt"
    failing = _script("""
        import sys
        print("loading", flush=True)
        sys.exit("ValueError: the reason it failed")
    """)
    with pytest.raises(StepFailed) as failure:
        run_step(plan, "broken", failing, outputs=[out])
    log = tmp_path / "logs" / "never.log"
    assert str(failure.value) == (f"step 'broken' failed (exit code 1); its output is in {log} (the last lines are "
                                  "above). Fix the cause and re-run `lape-eval demo`: finished steps are skipped.")
    assert said[1].startswith("✗ broken") and "failed (exit code 1)" in said[1]
    assert said[-2:] == ["    loading", "    ValueError: the reason it failed"]
    assert not (tmp_path / ".steps" / "never.txt.txt").exists() and plan.log == []


def test_verbose_streams_the_command_and_its_output_without_a_log(tmp_path, capfd):
    plan, said = _plan(tmp_path, verbose=True)
    out = tmp_path / "result.txt"
    command = _script("import sys; print('INFO streamed', file=sys.stderr)") + [str(out)]
    run_step(plan, "step", command, outputs=[out])
    assert "INFO streamed" in capfd.readouterr().err
    assert said[0].startswith("\n▶ step\n  $ ") and not (tmp_path / "logs").exists()
    with pytest.raises(StepFailed, match="step 'broken' failed .* see its output above"):
        run_step(plan, "broken", _script("raise SystemExit(3)"), outputs=[tmp_path / "never.txt"])


@pytest.mark.parametrize("chunks, expected", [
    (["no counter yet\n"], ()),
    # split inside a counter: only complete segments count
    (["phase A:  10%|#   | 1/10 [00:00<", "00:09]\rphase A:  20%|##  | 2/1", "0 [00:01<00:08]\r"], (2, 10, "phase A")),
    # a later bar replaces an earlier one, a bar without a description has no phase
    (["a:  100%|####| 3/3 [00:01<00:00]\n", " 40%|####      | 196/490 [00:02<00:03]\r"], (196, 490, "")),
    # a counter of nothing (0/0) is not progress
    (["b: 0%|    | 0/0 [00:00<?]\n"], ()),
])
def test_the_progress_reader_finds_the_latest_complete_counter(chunks, expected):
    reader = ProgressReader()
    results = [reader.feed(chunk) for chunk in chunks]
    assert results[-1] == expected


def test_in_process_work_writes_its_output_to_a_log_unless_verbose(tmp_path, capfd):
    plan, _ = _plan(tmp_path)
    log = tmp_path / "logs" / "model.log"
    with output_to_log(plan, log):
        os.write(1, b"progress of a library\n")  # at the file descriptors, as a library's own code writes
        os.write(2, b"C-level stderr\n")
    assert capfd.readouterr() == ("", "")
    assert log.read_text() == "progress of a library\nC-level stderr\n"
    plan.verbose = True
    with output_to_log(plan, tmp_path / "logs" / "verbose.log"):
        os.write(1, b"shown\n")
    assert capfd.readouterr().out == "shown\n" and not (tmp_path / "logs" / "verbose.log").exists()
