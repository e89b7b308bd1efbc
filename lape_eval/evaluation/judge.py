"""A chat model as judge, loaded and called through lm-eval's model registry.

Any model lm-eval can load judges: ``hf`` (an HF id or folder; the default), ``vllm``, or
``local-chat-completions`` for a local OpenAI-compatible server (``--judge-args
base_url=http://localhost:8000/v1/chat/completions``). Each chat goes through the model's own chat
template (``LM.apply_chat_template``) and ``LM.generate_until``.

Decoding: CLaS-Bench's judge samples (``judge_llm.py``: temperature 0.7, top-p 0.8, top-k 20,
Qwen3's non-thinking mode). We keep their sampling by default, because greedy replies of Qwen3
differ from what they measured, and make it reproducible with a fixed seed: torch's generator is
seeded before each batch for ``hf``, and ``seed`` is a model argument of ``vllm`` and of the API
models (sent with each request). ``greedy=True`` decodes greedily instead. The non-thinking mode is
asked for with ``enable_thinking=False`` (a model argument of ``hf`` and ``vllm``; the
``chat_template_kwargs`` of a chat-completions request).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from lape_eval.errors import LapeEvalError

DEFAULT_JUDGE = "Qwen/Qwen3-8B"
DEFAULT_LM = "hf"
# lm-eval's API model types, which name the model with model= (the others with pretrained=).
API_MODELS = ("local-chat-completions", "openai-chat-completions", "local-completions", "openai-completions")
# CLaS allows 16,384 new tokens; the judge writes "a few sentences" and the rating, so 1,024 is ample.
# A reply cut short without its rating counts as unparsed.
DEFAULT_MAX_GEN_TOKS = 1024


@dataclass(frozen=True)
class JudgeSettings:
    model: str = DEFAULT_JUDGE  # HF id or folder (or the served model's name for API models)
    lm: str = DEFAULT_LM  # the lm-eval model type
    model_args: str = ""  # extra lm-eval model arguments, "key=value,..."
    greedy: bool = False
    temperature: float = 0.7
    top_p: float = 0.8
    top_k: int = 20
    seed: int = 1234
    max_gen_toks: int = DEFAULT_MAX_GEN_TOKS

    def arg_string(self) -> str:
        name = "model" if self.lm in API_MODELS else "pretrained"
        given = {item.split("=", 1)[0].strip() for item in self.model_args.split(",") if "=" in item}
        args = [f"{name}={self.model}"] if name not in given else []
        if self.lm in ("hf", "vllm") and "enable_thinking" not in given:
            args.append("enable_thinking=False")
        if self.lm in ("vllm", *API_MODELS) and "seed" not in given:
            args.append(f"seed={self.seed}")
        return ",".join(args + [self.model_args] if self.model_args else args)

    def generation_kwargs(self) -> dict:
        kwargs: dict = {"max_gen_toks": self.max_gen_toks}
        if self.greedy:
            kwargs.update(do_sample=False, temperature=0.0)
        else:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        if self.lm in API_MODELS:
            kwargs["chat_template_kwargs"] = {"enable_thinking": False}
        return kwargs

    def describe(self) -> dict:
        """The judge's identity and decoding (part of every judgment's cache key)."""
        described = asdict(self)
        if self.greedy:
            for key in ("temperature", "top_p", "top_k", "seed"):
                described.pop(key)
        return described

    def label(self) -> str:
        decoding = "greedy" if self.greedy else (f"T={self.temperature:g}, top-p={self.top_p:g}, top-k={self.top_k}, "
                                                 f"seed={self.seed}")
        extra = f", {self.model_args}" if self.model_args else ""
        return f"{self.lm}:{self.model}{extra} ({decoding}, ≤{self.max_gen_toks} tokens)"


class Judge:
    """A loaded judge model: chats in, replies out."""

    def __init__(self, settings: JudgeSettings, batch_size: int | str = 1, device: str | None = None):
        import lm_eval.models  # noqa: F401  (registers lm-eval's own models; the registry skips it once any is registered)
        from lm_eval.api.registry import get_model

        self.settings = settings
        try:
            model_class = get_model(settings.lm)
        except ValueError as error:
            raise LapeEvalError(f"Unknown judge model type {settings.lm!r} ({error}). Use --judge-lm hf (an HF id or "
                                "folder), vllm, or local-chat-completions (a local OpenAI-compatible server).") from None
        extra = {"batch_size": batch_size}
        if device is not None:
            extra["device"] = device
        try:
            self.lm = model_class.create_from_arg_string(settings.arg_string(), extra)
        except Exception as error:  # noqa: BLE001  (any failure to load is the user's to fix)
            raise LapeEvalError(
                f"The judge model {settings.model!r} (lm-eval model {settings.lm!r}, arguments "
                f"{settings.arg_string()!r}) failed to load: {type(error).__name__}: {str(error).rstrip('.')}. Give an HF id that is "
                "in the local cache (or reachable online), a local folder with the model, or a running server "
                "(--judge-lm local-chat-completions --judge-args base_url=...).") from None

    def reply(self, chats: list[list[dict[str, str]]]) -> list[str]:
        """The judge's reply to each chat, in order."""
        from lm_eval.api.instance import Instance

        try:
            contexts = [self.lm.apply_chat_template(chat, add_generation_prompt=True) for chat in chats]
        except NotImplementedError:
            raise LapeEvalError(f"The judge model type {self.settings.lm!r} has no chat template: use a chat "
                                "(instruction-tuned) model with hf, vllm or local-chat-completions.") from None
        except ValueError as error:  # transformers: the tokenizer has no chat template
            raise LapeEvalError(f"The judge {self.settings.model!r} cannot format a chat ({error}): use a chat "
                                "(instruction-tuned) model.") from None
        kwargs = self.settings.generation_kwargs()
        requests = [Instance("generate_until", {}, (context, dict(kwargs)), index, ("lape_judge", index, 1))
                    for index, context in enumerate(contexts)]
        if not self.settings.greedy and self.settings.lm not in ("vllm", *API_MODELS):
            _seed_torch(self.settings.seed)
        replies = self.lm.generate_until(requests)
        if len(replies) != len(chats):
            raise LapeEvalError(f"The judge {self.settings.label()} returned {len(replies)} replies to {len(chats)} "
                                "chats.")
        return [reply if isinstance(reply, str) else "" for reply in replies]


def _seed_torch(seed: int) -> None:
    """Seed the sampling of an in-process judge (hf): the same batches give the same replies."""
    try:
        import torch
    except ImportError:  # an API-only installation has nothing to seed
        return
    torch.manual_seed(seed)
