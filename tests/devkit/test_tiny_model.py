"""The tiny model and LoRA adapter load, run and are byte-for-byte reproducible."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.devkit import tiny_model
from tests.devkit.tiny_model import make_tiny_llama, make_tiny_lora

MODEL_FILES = tiny_model.FILES


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"))


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_writes_a_hub_style_repo(tiny_dir: Path) -> None:
    assert {p.name for p in tiny_dir.iterdir()} == MODEL_FILES  # safetensors only, no .bin
    assert (tiny_dir / "model.safetensors").stat().st_size < 2 * 1024 * 1024
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert "im_start" in (tiny_dir / "chat_template.jinja").read_text()


def test_loads_offline_and_generates(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at import time, so patch it too
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    text = "héllo, wörld"
    ids = tokenizer(text, return_tensors="pt")
    assert tokenizer.decode(ids["input_ids"][0], skip_special_tokens=True) == text
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))
    prompt: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 4


def test_same_seed_same_bytes(tiny_dir: Path, tmp_path: Path) -> None:
    assert _digests(make_tiny_llama(tmp_path / "again")) == _digests(tiny_dir)
    other = _digests(make_tiny_llama(tmp_path / "seed1", seed=1))
    assert other["model.safetensors"] != _digests(tiny_dir)["model.safetensors"]
    assert other["tokenizer.json"] == _digests(tiny_dir)["tokenizer.json"]


def test_sizes_are_configurable(tmp_path: Path) -> None:
    d = make_tiny_llama(tmp_path / "m", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    config = json.loads((d / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (32, 1, 1)
    with pytest.raises(ValueError):
        make_tiny_llama(tmp_path / "bad", hidden_size=30, num_heads=4)


def test_lora_adapter_fits_the_base_model(tiny_dir: Path, tmp_path: Path) -> None:
    adapter = make_tiny_lora(tmp_path / "lora", tiny_dir, rank=4)
    assert {p.name for p in adapter.iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["task_type"]) == ("LORA", 4, "CAUSAL_LM")
    tensors = load_file(adapter / "adapter_model.safetensors")
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    modules = dict(base.named_modules())
    assert len(tensors) == 2 * 2 * len(config["target_modules"])  # layers x modules x (A, B)
    for key, tensor in tensors.items():
        name = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        weight = modules[name].weight  # (out, in)
        want = (4, weight.shape[1]) if ".lora_A." in key else (weight.shape[0], 4)
        assert tuple(tensor.shape) == want, key
    again = make_tiny_lora(tmp_path / "lora2", json.loads((tiny_dir / "config.json").read_text()))
    assert _digests(again) == _digests(adapter)
