"""Run the benchmarks and write ``benchmarks/RESULTS.md``.

Usage, from the repository root::

    python -m benchmarks.run [NAME ...] [--quick]

Every ``benchmarks/bench_*.py`` module that defines ``run()`` is a benchmark; NAME picks some of them
(``lape``, ``collect`` or ``bench_lape``...), none runs all. ``--quick`` is passed as ``run(quick=True)``
to the modules whose ``run`` takes a ``quick`` argument (and ignored by the others).

Each ``run()`` returns records (dicts) with ``name``, ``value``, ``unit``, ``target``, ``ratio`` and
``baseline`` (what the value is compared with, in words); by the convention of this folder
``ratio <= 1`` meets the target. A record may say ``passed`` itself, and ``comparison`` (``<=`` or
``>=``) for how value and target compare; without it the comparison is inferred from the ratio
(``value / target`` means "at most", ``target / value`` "at least").

The results are kept in ``benchmarks/results.json``, one entry per module with its records, date,
duration, machine and versions; RESULTS.md is rendered from it. A module that is not run keeps its
previous entry, so running one benchmark does not lose the others' rows. A module that raises is
recorded with its error and the others still run; the exit status is 1 if any module raised.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
VERSIONED = ("torch", "transformers", "lm_eval", "lape-eval")


class _Unimportable:
    """Stands in for a benchmark module that failed to import: running it reports the error."""

    def __init__(self, error: BaseException):
        self.error = error

    def run(self):
        raise self.error


def discover() -> dict[str, object]:
    """``{module name: module}`` for every ``bench_*.py`` here that defines ``run()``."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    found = {}
    for path in sorted(HERE.glob("bench_*.py")):
        try:
            module = importlib.import_module(f"benchmarks.{path.stem}")
        except Exception as error:  # noqa: BLE001 - reported when (and only if) that benchmark is run
            found[path.stem] = _Unimportable(error)
            continue
        if callable(getattr(module, "run", None)):
            found[path.stem] = module
    return found


def select(available: list[str], names: list[str]) -> list[str]:
    if not names:
        return available
    chosen = []
    for name in names:
        stem = name if name.startswith("bench_") else f"bench_{name}"
        stem = stem[:-3] if stem.endswith(".py") else stem
        if stem not in available:
            raise SystemExit(f"No benchmark {name!r}; available: {', '.join(s[len('bench_'):] for s in available)}")
        chosen.append(stem)
    return chosen


# --------------------------------------------------------------------------------------------------
# environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / 1e9
    except (OSError, ValueError):
        pass
    return None


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def _git_revision() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" (uncommitted changes)" if dirty else "")


def environment() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    ram = _ram_gb()
    return {
        "cpu": _cpu_model(),
        "cores": usable,
        "ram": f"{ram:.1f} GB" if ram else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        **{name: _version(name) for name in VERSIONED},
        "git": _git_revision(),
    }


# --------------------------------------------------------------------------------------------------
# running


def run_module(module, quick: bool) -> dict:
    run = module.run
    kwargs = {"quick": True} if quick and "quick" in inspect.signature(run).parameters else {}
    entry = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "quick": bool(kwargs),
        "environment": environment(),
        "loadavg_before": round(os.getloadavg()[0], 2),
    }
    start = time.perf_counter()
    try:
        entry["records"] = [_jsonable(record) for record in run(**kwargs)]
        entry["error"] = None
    except Exception as error:  # noqa: BLE001 - one broken benchmark must not stop the others
        entry["records"] = []
        entry["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    entry["seconds"] = round(time.perf_counter() - start, 1)
    entry["loadavg_after"] = round(os.getloadavg()[0], 2)
    return entry


def _jsonable(record: dict) -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif not isinstance(value, (str, int, float, bool, type(None), list, dict)):
            value = str(value)
        out[key] = value
    return out


def load_results() -> dict:
    if RESULTS_JSON.exists():
        try:
            data = json.loads(RESULTS_JSON.read_text(encoding="utf-8"))
            if isinstance(data.get("modules"), dict):
                return data
        except (OSError, ValueError):
            print(f"warning: {RESULTS_JSON} is unreadable; starting a new one", file=sys.stderr)
    return {"modules": {}}


def save_results(data: dict) -> None:
    tmp = RESULTS_JSON.with_name(f".{RESULTS_JSON.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(RESULTS_JSON)


@contextmanager
def _results_lock():
    """Serialise read-modify-write of the results with other runners (an flock on this folder)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    fd = os.open(HERE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def store_entry(stem: str, entry: dict) -> None:
    """Put one module's entry into results.json and re-render RESULTS.md.

    The file is read again at this moment, under a lock, so that entries written meanwhile by other
    runs (of other modules; benchmarks can take half an hour) are kept.
    """
    with _results_lock():
        data = load_results()
        data["modules"][stem] = entry
        save_results(data)
        RESULTS_MD.write_text(render(data), encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# rendering


def comparison(record: dict) -> str | None:
    """``<=`` (at most the target) or ``>=`` (at least), as stated or as the ratio implies."""
    if record.get("comparison") in ("<=", ">="):
        return record["comparison"]
    value, target, ratio = record.get("value"), record.get("target"), record.get("ratio")
    if not all(isinstance(x, (int, float)) for x in (value, target, ratio)) or not value or not target:
        return None
    at_most, at_least = value / target, target / value
    return "<=" if abs(ratio - at_most) <= abs(ratio - at_least) else ">="


def outcome(record: dict) -> str:
    if "passed" in record and record["passed"] is not None:
        return "pass" if record["passed"] else "FAIL"
    ratio = record.get("ratio")
    if record.get("value") is not None and record.get("target") is None:
        return "info"  # a measurement reported beside the targets (no target of its own)
    if record.get("value") is None or not isinstance(ratio, (int, float)):
        return "skipped"
    return "pass" if ratio <= 1 else "FAIL"


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else f"{value:,}"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def render(data: dict) -> str:
    modules = data["modules"]
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks.run` (`make bench`) from `benchmarks/results.json`; do not edit by "
        "hand. Each module's rows come from its latest run (date and machine under *Runs*). A row meets its "
        "target when `ratio` <= 1 (ratio = value / target for \"at most\" targets, target / value for \"at "
        "least\" targets) unless the record decides itself.",
        "",
        "| benchmark | measurement | target | measured | ratio | result | baseline / setting |",
        "|---|---|---|---|---|---|---|",
    ]
    for stem, entry in sorted(modules.items()):
        short = stem[len("bench_"):]
        if entry.get("error"):
            lines.append(f"| {short} | (module failed) | | | | error | {_cell(entry['error'])} |")
        for record in entry.get("records", []):
            unit = record.get("unit", "")
            sign = comparison(record)
            target = f"{sign or ''} {_number(record.get('target'))} {unit}".strip()
            measured = f"{_number(record.get('value'))} {unit}".strip() if record.get("value") is not None else "-"
            lines.append(
                f"| {short} | {_cell(record.get('name', ''))} | {_cell(target)} | {_cell(measured)} | "
                f"{_number(record.get('ratio'))} | {outcome(record)} | {_cell(record.get('baseline', ''))} |"
            )
    lines += ["", "## Runs", "",
              "| benchmark | date (UTC) | duration | quick | load avg before -> after | git |",
              "|---|---|---|---|---|---|"]
    for stem, entry in sorted(modules.items()):
        env = entry.get("environment", {})
        lines.append(
            f"| {stem[len('bench_'):]} | {entry.get('date', '')} | {entry.get('seconds', '')} s | "
            f"{'yes' if entry.get('quick') else 'no'} | {entry.get('loadavg_before', '')} -> "
            f"{entry.get('loadavg_after', '')} | {_cell(env.get('git') or '')} |"
        )
    environments = {}
    for stem, entry in sorted(modules.items()):
        key = json.dumps({k: v for k, v in entry.get("environment", {}).items() if k != "git"}, sort_keys=True)
        environments.setdefault(key, []).append(stem[len("bench_"):])
    lines += ["", "## Machine and versions", ""]
    for key, stems in environments.items():
        env = json.loads(key)
        if len(environments) > 1:
            lines += [f"For {', '.join(stems)}:", ""]
        lines += [
            f"- CPU: {env.get('cpu', '?')}, {env.get('cores', '?')} cores; RAM {env.get('ram', '?')}; "
            f"{env.get('os', '?')}",
            f"- Python {env.get('python', '?')}; " + ", ".join(f"{name} {env.get(name, '?')}" for name in VERSIONED),
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def print_records(records: list[dict], baselines: bool = False) -> None:
    """One line per record (outcome, value, target, ratio); with ``baselines``, its baseline below it.
    The runner prints this per module; a ``bench_*.py`` run on its own prints it with the baselines."""
    for record in records:
        print(f"   {outcome(record):7s} {record.get('name')}: {_number(record.get('value'))} {record.get('unit', '')} "
              f"(target {comparison(record) or ''} {_number(record.get('target'))}, ratio {_number(record.get('ratio'))})",
              flush=True)
        if baselines:
            print(f"           {record.get('baseline', '')}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quick = "--quick" in argv
    names = [a for a in argv if a != "--quick"]
    if any(a.startswith("-") for a in names):
        print(__doc__)
        return 0 if {"-h", "--help"} & set(names) else 2
    modules = discover()
    chosen = select(list(modules), names)
    failed = False
    for stem in chosen:
        print(f"== {stem}{' (quick)' if quick else ''}", flush=True)
        entry = run_module(modules[stem], quick)
        failed |= entry["error"] is not None
        print_records(entry["records"])
        if entry["error"]:
            print(f"   error: {entry['error']}", flush=True)
        print(f"   {entry['seconds']} s", flush=True)
        store_entry(stem, entry)  # after each module, so an interrupted run keeps what it measured
    print(f"wrote {RESULTS_MD.relative_to(REPO_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
