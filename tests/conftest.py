"""Shared pytest fixtures. Tiny test models live in tests/tiny_models.py."""

from __future__ import annotations

import os

# Set before any test module imports huggingface_hub / datasets, which read them at import time.
_TEST_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
os.environ.update(_TEST_ENV)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _offline_small_cpu():
    """Never touch the network; keep CPU threads low so parallel test runs do not thrash."""
    os.environ.update(_TEST_ENV)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """``tiny_model_dir(arch) -> Path``: a saved tiny model + tokenizer (see tiny_models.py),
    written once per session and architecture. Treat the directory as read-only."""
    from tiny_models import save_model

    cache: dict[str, os.PathLike] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = save_model(arch, tmp_path_factory.mktemp(f"tiny-{arch}"))
        return cache[arch]

    return get
