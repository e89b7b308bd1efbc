"""Benchmark: start-up cost of the ``lape_eval_lm_eval.pth`` hook for unrelated Python processes (issue 4).

Target: installing lape-eval adds < 10 ms to the start-up of Python processes that never use it.

The hook is one ``.pth`` line in site-packages, ``import lape_eval.evaluation.registration``, run by ``site`` at
every interpreter start; it imports the (cheap) package and puts a one-shot finder on
``sys.meta_path`` (see lape_eval/evaluation/registration.py). Nothing in site-packages is renamed or edited
during the benchmark (other people use the same environment); instead every arm is a separate,
complete environment:

* ``bare`` / ``installed``: two throw-away virtual environments made from the same interpreter with
  ``python -m venv --without-pip``; ``installed`` gets what a regular (wheel) install of lape-eval
  puts into site-packages: the ``lape_eval`` package (byte-compiled, as pip does) and
  ``lape_eval_lm_eval.pth``. The difference is the whole start-up cost of having lape-eval installed.
* ``dev_without`` / ``dev_with``: the project's own (editable) environment, seen through two folders
  of symlinks to every entry of its site-packages, with and without ``lape_eval_lm_eval.pth``;
  started as ``python -S -c "import site; site.addsitedir(FOLDER); <payload>"`` so that site-packages
  is replaced by the folder. The difference is the hook in the environment the tests run in (the
  editable install's own finder ``.pth``, setuptools' machinery, is in both arms).

Payloads: ``pass`` and ``import json``. All eight (arm, payload) combinations run in rotating
interleaved order, many times each; for each pair the benchmark reports the difference of the
medians of wall time (start to exit, as seen by the parent) and of the child's CPU time
(user + system, from ``os.wait4``, much less sensitive to the load of other processes on the shared
machine), plus the median of the paired per-round differences. ``-X importtime`` in the
``installed`` environment gives the hook's own import time (the ``self`` times of the ``lape_eval``
modules; median over runs). Finally the one-shot finder's cost for every later import of a process
(it sits first on ``sys.meta_path`` until ``lm_eval.models`` is imported) is timed per call.

Run: ``python benchmarks/bench_startup.py [--quick]``; ``python -m benchmarks.run startup`` calls :func:`run`.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import timeit
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PTH = "lape_eval_lm_eval.pth"
TARGET_MS = 10.0
PAYLOADS = {"pass": "pass", "import_json": "import json"}
ROUNDS = (150, 30)  # interleaved rounds (each runs every arm and payload once): normal, quick
IMPORTTIME_RUNS = (30, 8)


def _site_packages(prefix: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))


def _make_venv(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    return directory / "bin" / "python"


def _install_like_a_wheel(site_packages: Path) -> None:
    """What ``pip install lape-eval`` (a regular wheel) puts into site-packages, byte-compiled."""
    shutil.copytree(REPO_ROOT / "lape_eval", site_packages / "lape_eval",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO_ROOT / PTH, site_packages / PTH)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(site_packages / "lape_eval")], check=True)


def _mirror(site_packages: Path, directory: Path, with_hook: bool) -> Path:
    directory.mkdir()
    for entry in site_packages.iterdir():
        if entry.name == PTH and not with_hook:
            continue
        (directory / entry.name).symlink_to(entry)
    return directory


def prepare(scratch: Path) -> dict[str, list[str]]:
    """Command prefixes (everything but the payload) of the four arms."""
    bare = _make_venv(scratch / "bare")
    installed = _make_venv(scratch / "installed")
    _install_like_a_wheel(_site_packages(scratch / "installed"))
    project_site = Path(next(p for p in sys.path if p.endswith("site-packages") and (Path(p) / PTH).exists()))
    arms = {"bare": [str(bare), "-c"], "installed": [str(installed), "-c"]}
    for name, with_hook in (("dev_without", False), ("dev_with", True)):
        folder = _mirror(project_site, scratch / name, with_hook)
        arms[name] = [sys.executable, "-S", "-c", f"import site; site.addsitedir({str(folder)!r}); "]
    return arms


def _command(prefix: list[str], payload: str) -> list[str]:
    if prefix[-1] == "-c":
        return [*prefix, payload]
    return [*prefix[:-1], prefix[-1] + payload]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return env


def _time_once(command: list[str], env: dict, cwd: str) -> tuple[float, float]:
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command} exited with {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def _check(arms: dict, env: dict, cwd: str) -> None:
    """The arms really differ in the hook (and nothing else is imported from the checkout)."""
    probe = ("import sys; module = sys.modules.get('lape_eval'); "
             "print('lape_eval.evaluation.registration' in sys.modules, module.__file__ if module else None)")
    for name, prefix in arms.items():
        out = subprocess.run(_command(prefix, probe), env=env, cwd=cwd, capture_output=True, text=True, check=True)
        loaded, path = out.stdout.split()
        expected = name in ("installed", "dev_with")
        if (loaded == "True") != expected:
            raise RuntimeError(f"arm {name}: hook loaded = {loaded}, expected {expected}")
        if name == "installed" and not path.startswith(str(Path(prefix[0]).parents[1])):
            raise RuntimeError(f"arm installed imported lape_eval from {path}")


def importtime_ms(python: str, env: dict, cwd: str, runs: int) -> float:
    """Median over runs of the summed ``self`` import time of the lape_eval modules."""
    totals = []
    for _ in range(runs):
        out = subprocess.run([python, "-X", "importtime", "-c", "pass"], env=env, cwd=cwd, capture_output=True,
                             text=True, check=True)
        total = 0
        for line in out.stderr.splitlines():
            if not line.startswith("import time:") or "|" not in line:
                continue
            self_us, _, name = line[len("import time:"):].split("|")
            if name.strip().split(".")[0] == "lape_eval":
                total += int(self_us)
        totals.append(total / 1000)
    return statistics.median(totals)


def finder_ns_per_import() -> float:
    """Cost of the hook's finder for one unrelated import (it is asked first, and declines)."""
    from lape_eval.evaluation.registration import _LmEvalModelsFinder

    finder = _LmEvalModelsFinder()
    number = 200_000
    best = min(timeit.repeat(lambda: finder.find_spec("numpy.core.multiarray", None), number=number, repeat=5))
    return best / number * 1e9


def measure(quick: bool = False) -> dict:
    rounds = ROUNDS[1 if quick else 0]
    env = _clean_env()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        arms = prepare(Path(scratch))
        cwd = scratch
        _check(arms, env, cwd)
        combos = [(arm, payload) for arm in arms for payload in PAYLOADS]
        wall = {combo: [] for combo in combos}
        cpu = {combo: [] for combo in combos}
        for combo in combos:  # warm-up: page cache, pyc files
            _time_once(_command(arms[combo[0]], PAYLOADS[combo[1]]), env, cwd)
        for index in range(rounds):
            shift = index % len(combos)
            for combo in combos[shift:] + combos[:shift]:
                w, c = _time_once(_command(arms[combo[0]], PAYLOADS[combo[1]]), env, cwd)
                wall[combo].append(w)
                cpu[combo].append(c)
        import_ms = importtime_ms(arms["installed"][0], env, cwd, IMPORTTIME_RUNS[1 if quick else 0])
    pairs = {"installed": ("installed", "bare"), "dev": ("dev_with", "dev_without")}
    deltas = {}
    for pair, (a, b) in pairs.items():
        for payload in PAYLOADS:
            entry = {}
            for clock, times in (("wall", wall), ("cpu", cpu)):
                ta, tb = times[(a, payload)], times[(b, payload)]
                entry[clock] = {
                    "with_ms": statistics.median(ta) * 1e3, "without_ms": statistics.median(tb) * 1e3,
                    "delta_ms": (statistics.median(ta) - statistics.median(tb)) * 1e3,
                    "paired_delta_ms": statistics.median(x - y for x, y in zip(ta, tb)) * 1e3,
                }
            deltas[f"{pair}_{payload}"] = entry
    return {"deltas": deltas, "importtime_ms": import_ms, "finder_ns": finder_ns_per_import(), "rounds": rounds,
            "importtime_runs": IMPORTTIME_RUNS[1 if quick else 0],
            "python": sys.version.split()[0], "load": os.getloadavg()}


def run(quick: bool = False) -> list[dict]:
    raw = measure(quick)
    records = []
    load = ", ".join(f"{x:.1f}" for x in raw["load"])
    labels = {"installed": "regular install (venv + lape-eval as a wheel lays it out) vs the same venv without it",
              "dev": "the project's editable venv with vs without lape_eval_lm_eval.pth"}
    for key, entry in raw["deltas"].items():
        pair, payload = key.split("_", 1)
        wall, cpu = entry["wall"], entry["cpu"]
        value = max(wall["delta_ms"], 0.0)
        records.append({
            "name": f"startup_hook_{key}_wall_delta",
            "value": wall["delta_ms"], "unit": "ms", "target": TARGET_MS, "comparison": "<=",
            "ratio": value / TARGET_MS, "passed": wall["delta_ms"] < TARGET_MS,
            "baseline": (
                f"python -c '{PAYLOADS[payload]}', {labels[pair]}: median wall {wall['with_ms']:.1f} ms vs "
                f"{wall['without_ms']:.1f} ms (paired median difference {wall['paired_delta_ms']:+.2f} ms); "
                f"CPU time {cpu['with_ms']:.1f} vs {cpu['without_ms']:.1f} ms (difference "
                f"{cpu['delta_ms']:+.2f} ms, paired {cpu['paired_delta_ms']:+.2f} ms); {raw['rounds']} interleaved "
                f"rounds; Python {raw['python']}; load average {load}"
            ),
        })
    records.append({
        "name": "startup_hook_import_time",
        "value": raw["importtime_ms"], "unit": "ms", "target": TARGET_MS, "comparison": "<=",
        "ratio": raw["importtime_ms"] / TARGET_MS, "passed": raw["importtime_ms"] < TARGET_MS,
        "baseline": (
            f"python -X importtime -c pass in the regular-install venv: summed self time of the lape_eval modules "
            f"(median of {raw['importtime_runs']} runs); afterwards the hook's finder costs "
            f"{raw['finder_ns']:.0f} ns per import of the process until lm_eval.models is imported"
        ),
    })
    return records


if __name__ == "__main__":
    from run import print_records  # benchmarks/run.py: this file's sibling when run as a script

    print_records(run("--quick" in sys.argv[1:]), baselines=True)
