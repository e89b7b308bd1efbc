"""Tiny random-weight causal LMs (and a tiny tokenizer) for the unit tests.

Everything here is built offline, in well under a second, and deterministically (seeded):

* :func:`build_tokenizer` trains a byte-level BPE (so any text tokenizes) on :data:`CORPUS`, a few
  sentences per language in Latin, Cyrillic, Han, Kana, Hangul, Arabic, Devanagari and Tibetan
  script. It does not add a BOS token by itself (like GPT-2 / Qwen tokenizers).
* :data:`ARCHITECTURES` maps a name to a builder of one tiny model per supported family;
  :data:`MOE_ARCHITECTURES` and :data:`UNSUPPORTED_ARCHITECTURES` hold models that lape-eval must
  refuse (mixture-of-experts, and dense families it does not know).
* :func:`build_model` / :func:`save_model` give an eval-mode float32 model, in memory or on disk
  (``save_pretrained``, safetensors, with the tokenizer next to it).

Dimensions are deliberately odd-sized: hidden 32, MLP width 96 (64 for some), so a bug that mixes
the hidden and the intermediate axis fails with a shape error instead of passing by accident.
``initializer_range`` is raised to 0.2 so that pre-activations are O(1) and a wrong activation
function or a wrong half of a fused projection shows up far above the test tolerances.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

VOCAB_SIZE = 512
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
MAX_POSITIONS = 256
HIDDEN = 32
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
INIT_RANGE = 0.2

# A few sentences per language (ISO 639-1 codes, as in lape_eval.languages).
CORPUS: dict[str, list[str]] = {
    "en": [
        "The quick brown fox jumps over the lazy dog.",
        "Language models learn to predict the next word in a sentence.",
        "Every evening we walk along the river and talk about the day.",
    ],
    "de": [
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "Sprachmodelle lernen, das nächste Wort in einem Satz vorherzusagen.",
        "Jeden Abend gehen wir am Fluss spazieren und reden über den Tag.",
    ],
    "fr": [
        "Le renard brun rapide saute par-dessus le chien paresseux.",
        "Les modèles de langue apprennent à prédire le mot suivant d'une phrase.",
        "Chaque soir, nous marchons le long de la rivière et parlons de la journée.",
    ],
    "es": [
        "El rápido zorro marrón salta sobre el perro perezoso.",
        "Los modelos de lenguaje aprenden a predecir la siguiente palabra.",
        "Cada tarde caminamos junto al río y hablamos del día.",
    ],
    "it": [
        "La volpe marrone veloce salta sopra il cane pigro.",
        "I modelli linguistici imparano a prevedere la parola successiva.",
    ],
    "pt": [
        "A rápida raposa marrom pula sobre o cão preguiçoso.",
        "Os modelos de linguagem aprendem a prever a próxima palavra.",
    ],
    "nl": ["De snelle bruine vos springt over de luie hond."],
    "mt": ["Il-volpi kannella mgħaġġla taqbeż fuq il-kelb għażżien."],
    "tr": ["Hızlı kahverengi tilki tembel köpeğin üzerinden atlar."],
    "pl": ["Szybki brązowy lis przeskakuje nad leniwym psem."],
    "ru": [
        "Быстрая коричневая лиса прыгает через ленивую собаку.",
        "Языковые модели учатся предсказывать следующее слово в предложении.",
        "Каждый вечер мы гуляем вдоль реки и говорим о прошедшем дне.",
    ],
    "zh": [
        "敏捷的棕色狐狸跳过了懒狗。",
        "语言模型学习预测句子中的下一个词。",
        "每天晚上我们沿着河边散步，谈论这一天。",
    ],
    "ja": [
        "素早い茶色の狐がのろまな犬を飛び越える。",
        "言語モデルは文の次の単語を予測することを学びます。",
    ],
    "ko": ["빠른 갈색 여우가 게으른 개를 뛰어넘는다.", "언어 모델은 다음 단어를 예측하는 법을 배운다."],
    "ar": [
        "الثعلب البني السريع يقفز فوق الكلب الكسول.",
        "تتعلم النماذج اللغوية التنبؤ بالكلمة التالية في الجملة.",
        "كل مساء نمشي على طول النهر ونتحدث عن اليوم.",
    ],
    "hi": [
        "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
        "भाषा मॉडल वाक्य में अगला शब्द अनुमान लगाना सीखते हैं।",
        "हर शाम हम नदी के किनारे टहलते हैं और दिन के बारे में बात करते हैं।",
    ],
    "bo": [
        "ཝ་མོ་སྨུག་པོ་མགྱོགས་པོ་དེས་ཁྱི་ལེ་ལོ་ཅན་གྱི་སྟེང་ནས་མཆོངས་སོང་།",
        "སྐད་ཡིག་གི་དཔེ་དབྱིབས་ཀྱིས་ཚིག་རྐང་ནང་གི་ཚིག་རྗེས་མ་སྔོན་དཔག་བྱེད་སྟངས་སློབ་ཀྱི་ཡོད།",
        "དགོང་དྲོ་རེ་རེར་ང་ཚོ་གཙང་པོའི་འགྲམ་ལ་འཆམ་འཆམ་ལ་འགྲོ།",
    ],
}


# --------------------------------------------------------------------------------------------------
# Tokenizer


@functools.cache
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [s for sentences in CORPUS.values() for s in sentences]
    tok.train_from_iterator(lines * 4, trainer=trainer)
    return tok.to_str()


def _make_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=MAX_POSITIONS,
    )


@functools.cache
def _cached_tokenizer() -> PreTrainedTokenizerFast:
    return _make_tokenizer()


def build_tokenizer(path: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    """The tiny byte-level BPE tokenizer (cached in-process; do not mutate the returned object).

    With ``path``, the tokenizer is also saved there (see :func:`save_tokenizer`).
    """
    tokenizer = _cached_tokenizer()
    if path is not None:
        save_tokenizer(path)
    return tokenizer


def save_tokenizer(directory: str | os.PathLike) -> Path:
    """Save the tokenizer so that ``AutoTokenizer.from_pretrained(directory)`` loads it.

    ``tokenizer_config.json`` is made to name ``PreTrainedTokenizerFast``: transformers 5 writes
    ``TokenizersBackend``, which transformers 4 cannot load.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _cached_tokenizer().save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return directory


def _token_ids() -> dict:
    tok = _cached_tokenizer()
    return {
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }


# --------------------------------------------------------------------------------------------------
# Models


def _llama_like(config_cls: str, **overrides) -> PretrainedConfig:
    kwargs = dict(
        hidden_size=HIDDEN,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        initializer_range=INIT_RANGE,
        tie_word_embeddings=False,
        **_token_ids(),
    )
    kwargs.update(overrides)
    return getattr(transformers, config_cls)(**kwargs)


def _gpt2_config() -> PretrainedConfig:
    ids = _token_ids()
    return transformers.GPT2Config(
        vocab_size=ids["vocab_size"],
        n_positions=MAX_POSITIONS,
        n_embd=HIDDEN,
        n_layer=2,
        n_head=HEADS,
        n_inner=96,  # the default would be 4 * n_embd; tests accept both
        activation_function="gelu_new",
        initializer_range=INIT_RANGE,
        pad_token_id=ids["pad_token_id"],
        bos_token_id=ids["bos_token_id"],
        eos_token_id=ids["eos_token_id"],
    )


def _gemma3_text_config(**overrides) -> PretrainedConfig:
    kwargs = dict(
        head_dim=HEAD_DIM, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=HEAD_DIM,
        sliding_window=16, num_hidden_layers=3, tie_word_embeddings=True,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
    )
    kwargs.update(overrides)
    return _llama_like("Gemma3TextConfig", **kwargs)


def _gemma3_multimodal_config() -> PretrainedConfig:
    """Gemma-3 with its (tiny) SigLIP tower; model_type "gemma3", text model under text_config."""
    vision = transformers.SiglipVisionConfig(
        hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2, image_size=16,
        patch_size=8, initializer_range=INIT_RANGE,
    )
    text = _gemma3_text_config(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])
    return transformers.Gemma3Config(
        text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
        initializer_range=INIT_RANGE,
    )


# name -> (model class name in transformers, config factory)
_SPECS: dict[str, tuple[str, Callable[[], PretrainedConfig]]] = {
    "llama": ("LlamaForCausalLM", lambda: _llama_like("LlamaConfig")),
    "mistral": ("MistralForCausalLM", lambda: _llama_like("MistralConfig", head_dim=HEAD_DIM, sliding_window=64)),
    "qwen2": ("Qwen2ForCausalLM", lambda: _llama_like("Qwen2Config", intermediate_size=64)),
    "qwen3": ("Qwen3ForCausalLM", lambda: _llama_like("Qwen3Config", head_dim=HEAD_DIM)),
    "gemma": (
        "GemmaForCausalLM",
        lambda: _llama_like("GemmaConfig", head_dim=HEAD_DIM, hidden_act="gelu_pytorch_tanh", tie_word_embeddings=True),
    ),
    "gemma2": (
        "Gemma2ForCausalLM",
        lambda: _llama_like(
            "Gemma2Config", head_dim=HEAD_DIM, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=HEAD_DIM,
            sliding_window=16, tie_word_embeddings=True,
        ),
    ),
    "gemma3": ("Gemma3ForCausalLM", _gemma3_text_config),
    # Gemma-3 as released (image-text-to-text); text-only inputs work, there are no image tokens.
    "gemma3_multimodal": ("Gemma3ForConditionalGeneration", _gemma3_multimodal_config),
    "cohere": (
        "CohereForCausalLM", lambda: _llama_like("CohereConfig", intermediate_size=64, tie_word_embeddings=True),
    ),
    "cohere2": (
        "Cohere2ForCausalLM",
        lambda: _llama_like(
            "Cohere2Config", intermediate_size=64, sliding_window=16, tie_word_embeddings=True,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),
    "olmo": ("OlmoForCausalLM", lambda: _llama_like("OlmoConfig")),
    "olmo2": ("Olmo2ForCausalLM", lambda: _llama_like("Olmo2Config", num_key_value_heads=HEADS)),
    "olmo3": (
        "Olmo3ForCausalLM",
        lambda: _llama_like(
            "Olmo3Config", num_key_value_heads=HEADS, sliding_window=16,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),
    "phi3": ("Phi3ForCausalLM", lambda: _llama_like("Phi3Config", num_key_value_heads=HEADS)),
    "gpt2": ("GPT2LMHeadModel", _gpt2_config),
}

_MOE_SPECS: dict[str, tuple[str, Callable[[], PretrainedConfig]]] = {
    "mixtral": (
        "MixtralForCausalLM",
        lambda: _llama_like("MixtralConfig", head_dim=HEAD_DIM, num_local_experts=4, num_experts_per_tok=2),
    ),
    "qwen2_moe": (
        "Qwen2MoeForCausalLM",
        lambda: _llama_like(
            "Qwen2MoeConfig", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=48,
            shared_expert_intermediate_size=64,
        ),
    ),
}

# Dense families that lape-eval does not know: StableLM has a gated MLP with ``mlp.act_fn`` (so a
# test can teach it with register_family); GPT-NeoX has a plain nn.Linear MLP with ``mlp.act``.
_UNSUPPORTED_SPECS: dict[str, tuple[str, Callable[[], PretrainedConfig]]] = {
    "stablelm": ("StableLmForCausalLM", lambda: _llama_like("StableLmConfig", num_key_value_heads=HEADS)),
    "gpt_neox": (
        "GPTNeoXForCausalLM",
        lambda: _llama_like("GPTNeoXConfig", num_key_value_heads=HEADS, hidden_act="gelu", rotary_pct=0.5),
    ),
}


def _builder(spec: tuple[str, Callable[[], PretrainedConfig]]) -> Callable[[int], PreTrainedModel]:
    class_name, make_config = spec

    def build(seed: int = 0) -> PreTrainedModel:
        config = make_config()
        model_cls = getattr(transformers, class_name)
        with torch.random.fork_rng(devices=[]):  # seed without disturbing the caller's RNG
            torch.manual_seed(seed)
            model = model_cls(config)
        return model.to(torch.float32).eval()

    build.__name__ = f"build_{class_name}"
    return build


ARCHITECTURES: dict[str, Callable[[int], PreTrainedModel]] = {k: _builder(v) for k, v in _SPECS.items()}
MOE_ARCHITECTURES: dict[str, Callable[[int], PreTrainedModel]] = {k: _builder(v) for k, v in _MOE_SPECS.items()}
UNSUPPORTED_ARCHITECTURES: dict[str, Callable[[int], PreTrainedModel]] = {
    k: _builder(v) for k, v in _UNSUPPORTED_SPECS.items()
}
_ALL = {**ARCHITECTURES, **MOE_ARCHITECTURES, **UNSUPPORTED_ARCHITECTURES}


def build_model(arch: str, seed: int = 0) -> PreTrainedModel:
    """A fresh tiny model of ``arch`` (a key of ARCHITECTURES, MOE_ARCHITECTURES or
    UNSUPPORTED_ARCHITECTURES): random weights from ``seed``, float32, eval mode."""
    try:
        builder = _ALL[arch]
    except KeyError:
        raise KeyError(f"No tiny model {arch!r}; known: {', '.join(_ALL)}") from None
    return builder(seed)


def save_model(arch: str, directory: str | os.PathLike, seed: int = 0) -> Path:
    """Save a tiny ``arch`` model and the tokenizer into ``directory`` (safetensors); return it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build_model(arch, seed).save_pretrained(directory)
    save_tokenizer(directory)
    return directory
