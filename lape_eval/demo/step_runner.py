"""One demo step: a command run unless its outputs are already there, quietly or streaming.

Quiet (the default): the step's whole output (lm-eval's INFO logging, progress bars, warnings) goes
to ``OUT/logs/<step>.log``, whose first line is the command itself; the terminal shows one line per
step — what it does, a progress bar read from the progress counters the command prints, its time and
its log. ``--verbose`` streams the command's output instead, as a terminal would show it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from lape_eval.demo.plan import DemoPlan

# A progress counter as tqdm prints it ("Running generate_until requests:  45%|███  | 220/490 [01:02<...").
_COUNTER = re.compile(r"(?:(?P<phase>[^\r\n:|]*?):\s*)?\d+%\|[^|\r\n]*\|\s*(?P<done>\d+)/(?P<total>\d+)")
_TAIL_LINES = 15  # lines of a failed step's log shown on the terminal
_REDRAW_SECONDS = 0.5


class StepFailed(RuntimeError):
    """A step's command ended with an error; the message says where its output is."""


def run_step(plan: DemoPlan, title: str, command: list[str], outputs: list[Path], resumable: bool = False) -> None:
    """Run one step unless its outputs exist and were made by this very command.

    The command of each finished step is recorded under ``OUT/.steps/``; a step whose options changed
    since (other languages, another calibration) has its old outputs removed and runs again. The
    outputs of an interrupted ``resumable`` step are kept: the command itself resumes from them.
    """
    recorded = " ".join(command[1:])  # not the interpreter's path: a new virtualenv changes nothing
    record = plan.out / ".steps" / f"{outputs[0].name}.txt"
    if all(path.exists() for path in outputs) and record.exists() and record.read_text(encoding="utf-8") == recorded:
        plan.say(f"✓ {title} (already done)")
        return
    if not resumable or record.exists():
        for path in outputs:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    started = time.monotonic()
    if plan.verbose:
        _run_streaming(plan, title, command)
    else:
        _run_logged(plan, title, command, plan.logs / f"{Path(outputs[0].name).stem}.log")
    record.parent.mkdir(exist_ok=True)
    record.write_text(recorded, encoding="utf-8")
    plan.log.append((title, round(time.monotonic() - started, 1)))


@contextlib.contextmanager
def output_to_log(plan: DemoPlan, log_path: Path):
    """Inside the block, this process's own stdout and stderr (progress bars of libraries included)
    go to ``log_path`` instead of the terminal, unless the plan is verbose: for the work the demo does
    in-process (preparing the model) rather than through a command."""
    if plan.verbose:
        yield
        return
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)


def _shown(command: list[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def _run_streaming(plan: DemoPlan, title: str, command: list[str]) -> None:
    plan.say(f"\n▶ {title}\n  $ {_shown(command)}")
    code = subprocess.run(command).returncode
    if code != 0:
        raise StepFailed(f"step '{title}' failed (exit code {code}); see its output above. "
                         "Fix the cause and re-run `lape-eval demo`: finished steps are skipped.")


def _run_logged(plan: DemoPlan, title: str, command: list[str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    line = StepLine(plan, title, log_path)
    progress = ProgressReader()
    with open(log_path, "wb") as log:
        log.write(f"$ {_shown(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        line.start()
        try:
            for chunk in iter(lambda: process.stdout.read1(1 << 16), b""):
                log.write(chunk)
                log.flush()
                line.progress(*progress.feed(chunk.decode("utf-8", errors="replace")))
            code = process.wait()
        except BaseException:  # Ctrl-C reaches the command too: let it stop, keep its log, say where
            process.wait()
            line.finish("■", "interrupted")
            raise
    if code != 0:
        line.finish("✗", f"failed (exit code {code})")
        for text in _last_lines(log_path):
            plan.say(f"    {text}")
        raise StepFailed(f"step '{title}' failed (exit code {code}); its output is in {log_path} (the last lines "
                         "are above). Fix the cause and re-run `lape-eval demo`: finished steps are skipped.")
    line.finish("✓", "")


def _last_lines(log_path: Path) -> list[str]:
    """The end of a log as a terminal shows it: of each line redrawn with ``\\r``, its last state."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    shown = [line.rsplit("\r", 1)[-1].rstrip() for line in lines]
    return [line for line in shown if line][-_TAIL_LINES:]


class ProgressReader:
    """The latest progress counter (done, total, phase) in a command's output, fed in chunks."""

    def __init__(self) -> None:
        self._pending = ""  # the unfinished last segment of the previous chunk
        self.latest: tuple[int, int, str] | None = None

    def feed(self, text: str) -> tuple[int, int, str] | tuple[()]:
        """Read ``text``; return the latest counter, or ``()`` while none has been seen."""
        segments = re.split(r"[\r\n]", self._pending + text)
        self._pending = segments.pop()
        for segment in segments:
            match = _COUNTER.search(segment)
            if match and int(match["total"]) > 0:
                self.latest = (int(match["done"]), int(match["total"]), (match["phase"] or "").strip())
        return self.latest or ()


class StepLine:
    """The terminal line of one running step.

    With a live terminal (``plan.live``) the line is redrawn in place — title, progress bar, elapsed
    time, log — at most every half second and each second even when the command prints nothing; it
    ends as ``✓ title  time  log: …``. Without one, ``plan.say`` prints a line when the step starts
    and one when it ends.
    """

    def __init__(self, plan: DemoPlan, title: str, log_path: Path):
        self.plan, self.title, self.log_path = plan, title, log_path
        self.started = time.monotonic()
        self.counter: tuple[int, int, str] | tuple[()] = ()
        self._drawn = 0.0
        self._done = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = time.monotonic()
        if self.plan.live is None:
            self.plan.say(f"▶ {self.title} … (log: {self.log_path})")
            return
        self._draw()
        threading.Thread(target=self._tick, daemon=True).start()

    def progress(self, *counter) -> None:
        self.counter = counter
        if self.plan.live is not None and time.monotonic() - self._drawn >= _REDRAW_SECONDS:
            self._draw()

    def finish(self, mark: str, status: str) -> None:
        self._done.set()
        text = f"{mark} {self.title}  {_clock(time.monotonic() - self.started)}"
        text += f"  {status}" if status else ""
        text += f"  log: {self.log_path}"
        if self.plan.live is None:
            self.plan.say(text)
            return
        with self._lock:
            self.plan.live.write("\r\x1b[K" + text + "\n")
            self.plan.live.flush()

    def _tick(self) -> None:
        while not self._done.wait(1.0):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._drawn = time.monotonic()
            width = shutil.get_terminal_size().columns - 1
            text = f"▶ {self.title}  {_bar(self.counter)}  {_clock(self._drawn - self.started)}  log: {self.log_path}"
            self.plan.live.write("\r\x1b[K" + text[:width])
            self.plan.live.flush()


def _bar(counter: tuple[int, int, str] | tuple[()], width: int = 20) -> str:
    if not counter:
        return "[" + " " * width + "]"
    done, total, phase = counter
    filled = min(width, round(width * done / total))
    return "[" + "█" * filled + "·" * (width - filled) + f"] {done}/{total}" + (f" {phase}" if phase else "")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"
