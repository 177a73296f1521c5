"""A tiny random Llama-style causal LM and a LoRA adapter for it, written as Hub repos hold them.

Tests and the offline demo need a real model repo (config, safetensors weights, tokenizer, chat
template) that ``transformers`` can load and run, without network access and in well under a second
of compute. The weights are random and the tokenizer is a byte-level BPE with no merges (one token
per byte plus a few special tokens), built in memory with ``tokenizers``: no download, no training.

Everything is deterministic for a given ``seed`` and set of sizes: the same arguments give the same
bytes, so ``model.safetensors`` has the same sha256 on every run (within one torch/transformers
version pair).

``torch``, ``transformers`` and ``tokenizers`` are imported lazily, so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
PAD_TOKEN = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, IM_START, IM_END)

# ChatML-style template; transformers 5 saves it as chat_template.jinja next to the tokenizer.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LORA_TARGET_MODULES = ("q_proj", "v_proj")


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded for a model's random weights, then as it was before."""
    import torch

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _build_tokenizer() -> Any:
    """Byte-level BPE without merges: every byte is a token, so any text encodes without <unk>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    fast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=256,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# What make_tiny_llama writes: everything a server loads, and nothing else.
FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    }
)


def make_tiny_llama(
    dest: Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 256,
) -> Path:
    """Write a random Llama-style causal LM repo into ``dest`` (created if missing) and return it.

    Files: config.json, generation_config.json, model.safetensors (float32, tied embeddings),
    tokenizer.json, tokenizer_config.json, chat_template.jinja. With the defaults the weights are
    about 0.4 MB. ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained(dest)`` load it offline.
    """
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        dtype="float32",
        architectures=["LlamaForCausalLM"],
    )
    with _seeded(seed):
        model = LlamaForCausalLM(config).eval()  # type: ignore[no-untyped-call]
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=8,
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def make_tiny_causal_lm(dest: Path, model_type: str, *, seed: int = 0, **overrides: Any) -> Path:
    """Write a random causal LM of any transformers ``model_type`` (its own config class, tiny
    sizes) with the devkit tokenizer into ``dest``; ``overrides`` go into the config, e.g.
    ``sliding_window=8``. Sizes follow the Llama-style names; GPT-2's are mapped."""
    from transformers import AutoConfig, AutoModelForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    sizes: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
    }
    if model_type == "gpt2":
        sizes = {
            "vocab_size": sizes["vocab_size"],
            "n_embd": 64,
            "n_layer": 2,
            "n_head": 4,
            "n_positions": 512,
        }
    config = AutoConfig.for_model(
        model_type,
        **sizes,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    with _seeded(seed):
        model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


# A tiny Gemma 3 with vision: 32x32 images in 8x8 patches, pooled into 4 tokens per image.
GEMMA3_IMAGE_SIZE, GEMMA3_IMAGE_TOKENS = 32, 4


def make_tiny_gemma3_vision(dest: Path, *, seed: int = 0) -> tuple[Path, dict[str, int]]:
    """Write a random ``Gemma3ForConditionalGeneration`` (its own config classes: Gemma 3 text and
    SigLIP vision, tiny sizes) with the devkit tokenizer into ``dest``; returns it and the ids of
    its image tokens (``image``, ``begin``, ``end``), placed past the tokenizer's vocabulary as
    Gemma's processor does with its own."""
    from transformers import AutoModelForCausalLM, Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    vocab = len(tokenizer)
    ids = {"begin": vocab, "end": vocab + 1, "image": vocab + 2}
    specials = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text = Gemma3TextConfig(
        vocab_size=vocab + 3,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        layer_types=["full_attention", "full_attention"],
        **specials,
    )
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=GEMMA3_IMAGE_SIZE,
        patch_size=8,
    )
    config = Gemma3Config(
        text_config=text.to_dict(),
        vision_config=vision.to_dict(),
        mm_tokens_per_image=GEMMA3_IMAGE_TOKENS,
        boi_token_index=ids["begin"],
        eoi_token_index=ids["end"],
        image_token_index=ids["image"],
        **specials,
    )
    with _seeded(seed):
        model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest, ids


def make_tiny_sentence_transformer(dest: Path, *, seed: int = 0) -> Path:
    """Write a sentence-transformers embedding model into ``dest`` with the library itself: a tiny
    random BERT (``BertModel``, a WordPiece vocabulary of letters), mean pooling, normalisation.

    Files as the hub holds them: config.json, model.safetensors, tokenizer files, modules.json,
    sentence_bert_config.json, config_sentence_transformers.json, 1_Pooling/config.json,
    2_Normalize/config.json (and a README the library writes).
    """
    import shutil
    import tempfile

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertConfig, BertModel, BertTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *("##" + c for c in letters)]
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        (base / "vocab.txt").write_text("\n".join(vocab) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(base / "vocab.txt"))  # type: ignore[no-untyped-call]
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        with _seeded(seed):
            BertModel(config).eval().save_pretrained(base)  # type: ignore[no-untyped-call]
        tokenizer.save_pretrained(base)
        transformer = Transformer(str(base), max_seq_length=128)
        pooling = Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[transformer, pooling, Normalize()])
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        model.save(str(dest))
    return dest


def make_tiny_lora(
    dest: Path,
    base_config: Path | Mapping[str, Any],
    *,
    base_model_id: str = "devkit/tiny-llama",
    rank: int = 4,
    alpha: int = 8,
    seed: int = 0,
    target_modules: Sequence[str] = LORA_TARGET_MODULES,
) -> Path:
    """Write a PEFT-format LoRA adapter repo for a tiny Llama into ``dest`` and return it.

    ``base_config`` is the base model's directory (its config.json is read) or the config as a dict.
    Files: adapter_config.json and adapter_model.safetensors, with keys named as peft saves them
    (``base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight``). No peft needed.
    """
    import torch
    from safetensors.torch import save_file

    cfg = _load_config(base_config)
    hidden = int(cfg["hidden_size"])
    heads = int(cfg["num_attention_heads"])
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    out_features = {
        "q_proj": heads * head_dim,
        "k_proj": kv_heads * head_dim,
        "v_proj": kv_heads * head_dim,
        "o_proj": hidden,
    }
    unknown = set(target_modules) - set(out_features)
    if unknown:
        raise ValueError(f"unsupported LoRA target modules: {sorted(unknown)}")

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(int(cfg["num_hidden_layers"])):
        for module in target_modules:
            in_features = heads * head_dim if module == "o_proj" else hidden
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            # Non-zero B (unlike a fresh peft init) so the adapter visibly changes the outputs.
            tensors[f"{prefix}.lora_A.weight"] = 0.02 * torch.randn(rank, in_features, generator=generator)
            tensors[f"{prefix}.lora_B.weight"] = 0.02 * torch.randn(
                out_features[module], rank, generator=generator
            )

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dest / "adapter_model.safetensors"), metadata={"format": "pt"})
    adapter_config = {
        "base_model_name_or_path": base_model_id,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": rank,
        "revision": None,
        "target_modules": sorted(target_modules),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    }
    (dest / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return dest


def _load_config(base_config: Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(base_config, Mapping):
        return base_config
    path = Path(base_config)
    if path.is_dir():
        path = path / "config.json"
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded
