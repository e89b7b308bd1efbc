"""Run a command under another CPU kernel set than this machine's own (``make test-numerics``).

PyTorch picks its vectorised kernels by the CPU (``torch.backends.cpu.get_cpu_capability()``: AVX512,
AVX2, DEFAULT = scalar); MKL and oneDNN pick theirs for matrix products. The libraries' own switches
choose a narrower set: ``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS`` and ``ONEDNN_MAX_CPU_ISA``.
Floats summed by other kernels differ in the last bits, which is what a second run must tolerate.

Usage: ``python scripts/second_isa.py [avx2|default] -- COMMAND...`` (without a choice: AVX2, or the
scalar kernels where AVX2 is already the native set).
"""

from __future__ import annotations

import os
import subprocess
import sys

SWITCHES = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def native_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability().lower()


def main(argv: list[str]) -> int:
    if "--" not in argv:
        sys.exit(__doc__)
    split = argv.index("--")
    choice, command = (argv[:split] or [""])[0], argv[split + 1:]
    native = native_capability()
    if not choice:
        choice = "default" if native == "avx2" else "avx2"
    if choice not in SWITCHES:
        sys.exit(f"Unknown kernel set {choice!r}: choose avx2 or default.")
    environment = {**os.environ, **SWITCHES[choice]}
    print(f"second kernel set: {choice} (this machine's own: {native})", flush=True)
    return subprocess.call(command, env=environment)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
