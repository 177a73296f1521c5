"""Compile in one fresh process, serve warm from its artifacts in another.

The slow tests are the real thing on tiny random models (CPU, float32): the warm-up process
writes an entry with compile_model, a second process activates it, wraps a freshly loaded model
with compile_for_serving and serves a prompt length that was never compiled, as a scoring
forward and as ``generate()`` with the model's own KV cache. Inductor must then report only
FX-graph-cache hits, and logits and tokens must match eager. Separate processes matter: in one
process Dynamo's in-memory caches would hide a broken on-disk cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from modelwarmup.compilation.settings import CompileSettings

ROOT = Path(__file__).resolve().parents[2]


def _run_python(code: str, *, timeout: float = 420) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it must print one JSON object as its last line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR_", "TRITON_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "operator"), env.get("PYTHONPATH")]))
    env["TOKENIZERS_PARALLELISM"] = "false"
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, result.stdout[-3000:] + result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


COMPILE = """
    import json
    from pathlib import Path
    from modelwarmup.compilation.compiler import compile_model
    from modelwarmup.compilation.settings import CompileSettings
    settings = CompileSettings.model_validate_json({settings!r})
    report = compile_model(Path({model!r}), settings, Path({entry!r}))
    print(report.model_dump_json())
"""

SERVE = """
    import dataclasses, json, time
    from pathlib import Path
    from modelwarmup.runtime import activate, cache_stats, compile_for_serving, load_aoti
    from modelwarmup.compilation import isa_checks
    from modelwarmup.compilation.compiler import load_model
    from modelwarmup.compilation.settings import CompileSettings
    started = time.perf_counter()
    activation = activate(Path({entry!r}), private_dir=Path({private!r}))
    import torch
    settings = CompileSettings.model_validate_json({settings!r})
    model = compile_for_serving(load_model(Path({model!r}), settings), settings)
    ids = torch.randint(0, 250, (1, {length}), generator=torch.Generator().manual_seed(7))
    generate = dict(attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    with torch.no_grad():
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=False).logits
        first = time.perf_counter() - t0
        tokens = model.generate(ids, **generate)
        stats = cache_stats()
        with torch.compiler.set_stance("force_eager"):
            ref = model(input_ids=ids, use_cache=False).logits
            ref_tokens = model.generate(ids, **generate)
        result = {{"stats": stats, "diff": (out - ref).abs().max().item(), "first_call_s": first,
                   "same_tokens": tokens.tolist() == ref_tokens.tolist(), "new": tokens.shape[1] - ids.shape[1],
                   "activation": json.loads(json.dumps(dataclasses.asdict(activation), default=str)),
                   "isa_checks_run": isa_checks.ran()}}
        aoti = load_aoti(Path({entry!r}))
        if aoti is not None:
            result["aoti_diff"] = (aoti(ids) - ref).abs().max().item()
    print(json.dumps(result))
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.devkit.tiny_model import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("regional", "aot_inductor"), [(False, True), (True, False)], ids=["whole+aoti", "regional"]
)
def test_compile_then_serve_warm(
    tiny_model: Path, tmp_path: Path, regional: bool, aot_inductor: bool
) -> None:
    settings = CompileSettings(
        dtype="float32",
        device="cpu",
        max_length=64,
        max_batch_size=1,
        batch_sizes=(1,),
        sequence_lengths=(8, 24),
        regional=regional,
        aot_inductor=aot_inductor,
    )
    entry = tmp_path / "entry"
    report = _run_python(
        COMPILE.format(settings=settings.model_dump_json(), model=str(tiny_model), entry=str(entry))
    )
    # Scoring: one dynamic-length graph serves both lengths (and all layers, when regional).
    # generate(): prefill with an empty cache, the first step, and the steps after it, all
    # dynamic in the cache's length.
    assert report["graph_count"] == 4
    assert report["counters"]["fxgraph_cache_miss"] == 4
    assert [g["same_tokens"] for g in report["generation"]] == [True, True]
    assert report["max_abs_diff"] < 1e-4
    assert (entry / "inductor" / "fxgraph").is_dir()
    assert (entry / "megacache.bin").stat().st_size > 0
    assert json.loads((entry / "isa_checks.json").read_text())["answers"]  # Inductor's ISA checks, answered
    assert (entry / "aoti" / "model.pt2").is_file() == aot_inductor
    before = _files(entry)

    served = _run_python(
        SERVE.format(
            entry=str(entry),
            private=str(tmp_path / "private"),
            settings=settings.model_dump_json(),
            model=str(tiny_model),
            length=13,  # never compiled
        )
    )
    stats = served["stats"]
    assert stats["fxgraph_cache_hit"] > 0, stats
    assert stats["fxgraph_cache_miss"] == 0, stats
    assert stats["autograd_cache_miss"] == 0, stats
    assert served["diff"] < 1e-4
    assert served["same_tokens"] and served["new"] == 16
    assert served["activation"]["copied_files"] > 0
    assert served["isa_checks_run"] == 0  # every ISA check answered from the entry: no test library built
    assert served["activation"]["inductor_dir"] == str((tmp_path / "private").resolve())
    if aot_inductor:
        assert served["aoti_diff"] < 1e-4
    assert _files(entry) == before  # serving never writes into the shared entry


def test_platform_key_stable_and_sensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # ISA probe lands here
    import torch

    from modelwarmup.compilation.platform import compile_env, platform_fingerprint, platform_key

    first = platform_fingerprint("cpu")
    assert platform_key(first) == platform_key(platform_fingerprint("cpu"))
    assert len(platform_key(first)) == 16
    for name in (
        "torch",
        "cpu_vec_isa",
        "cpu_flags",
        "cxx",
        "cxx_version",
        "python_executable",
        "num_threads",
    ):
        assert name in first, name

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        changed = platform_fingerprint("cpu")
    finally:
        torch.set_num_threads(threads)
    assert changed["num_threads"] == str(threads + 1)
    assert platform_key(changed) != platform_key(first)

    monkeypatch.setenv("TORCHINDUCTOR_MAX_AUTOTUNE", "1")
    with_env = platform_fingerprint("cpu")
    assert with_env["env:TORCHINDUCTOR_MAX_AUTOTUNE"] == "1"
    assert platform_key(with_env) != platform_key(first)

    for name, value in first.items():  # every single input moves the key
        assert platform_key({**first, name: value + "x"}) != platform_key(first)

    env = compile_env(
        {
            "TORCHINDUCTOR_CACHE_DIR": "/x",
            "TRITON_CACHE_DIR": "/y",
            "TORCHINDUCTOR_SOME_TOKEN": "s",
            "HF_TOKEN": "s",
            "OMP_NUM_THREADS": "4",  # torch's thread count: num_threads holds it
            "KMP_DUPLICATE_LIB_OK": "True",  # set by scikit-learn's import: scheduling, not code
            "TORCHINDUCTOR_MAX_AUTOTUNE": "1",
            "HOME": "/root",
        }
    )
    assert env == {"TORCHINDUCTOR_MAX_AUTOTUNE": "1"}


FINGERPRINT = """
import json, sys
from modelwarmup.compilation.platform import platform_fingerprint
print(json.dumps(platform_fingerprint("cpu")))
"""


def test_the_same_interpreter_by_another_name_is_the_same_platform(tmp_path: Path) -> None:
    """A server started as `python` and a worker started as `python3` (or the console script):
    one interpreter, one key; the names are links to the same file."""
    names = [Path(sys.executable).with_name(name) for name in ("python", "python3")]
    names = [name for name in names if name.exists()]
    if len(names) < 2:
        pytest.skip("this environment has no python/python3 pair")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR_", "TRITON_"))}
    env.update(PYTHONPATH=str(ROOT / "operator"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path))
    prints = [
        json.loads(
            subprocess.run(
                [str(name), "-c", FINGERPRINT],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout.splitlines()[-1]
        )
        for name in names
    ]
    assert prints[0] == prints[1]
    assert prints[0]["python_executable"] == os.path.realpath(sys.executable)
    assert "transformers" not in prints[0] and "python_prefix" not in prints[0]


def test_settings_cache_digest_covers_every_setting() -> None:
    base = CompileSettings(dtype="float32", max_length=128, max_batch_size=4, batch_sizes=(1, 2))
    variants = {
        "dtype": {"dtype": "bfloat16"},
        "device": {"device": "cuda"},
        "max_length": {"max_length": 256},
        "max_batch_size": {"max_batch_size": 8},
        "batch_sizes": {"batch_sizes": (1, 4)},
        "sequence_lengths": {"sequence_lengths": (8, 32)},
        "mode": {"mode": "max-autotune"},
        "regional": {"regional": False},
        "aot_inductor": {"aot_inductor": True},
        "extra_options": {"extra_options": {"freezing": True}},
        "trust_remote_code": {"trust_remote_code": True},
    }
    assert set(variants) == set(CompileSettings.model_fields)
    seen = {base.cache_digest()}
    for name, change in variants.items():
        changed = base.model_copy(update=change)
        changed = CompileSettings.model_validate(changed.model_dump())
        assert changed.cache_digest() not in seen, name
        seen.add(changed.cache_digest())

    assert base.cache_digest() == CompileSettings.model_validate(base.model_dump()).cache_digest()
    same_gpu_code = CompileSettings(device="cuda:0").cache_digest()
    assert same_gpu_code == CompileSettings(device="cuda:1").cache_digest()
    assert base.cache_fields()["sequence_lengths"] == [16, 64]


@pytest.mark.parametrize(
    "bad",
    [
        {"device": "tpu"},
        {"batch_sizes": (2,), "max_batch_size": 1},
        {"sequence_lengths": (100,), "max_length": 64},
        {"extra_options": {"bad key": 1}},
        {"mode": "fast"},
    ],
)
def test_settings_reject_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CompileSettings.model_validate(bad)


@pytest.mark.slow
def test_sliding_window_model_generates_warm_on_both_sides_of_its_window(tmp_path: Path) -> None:
    """Gemma 3's layout: a sliding-window layer next to a full-attention one, the window (8)
    far below max_length, which a strict dynamic range turned into ConstraintViolationError."""
    from tests.devkit.tiny_model import make_tiny_causal_lm

    model = make_tiny_causal_lm(
        tmp_path / "gemma3",
        "gemma3_text",
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
    )
    settings = CompileSettings(dtype="float32", max_length=64, sequence_lengths=(16,))
    entry = tmp_path / "entry"
    report = _run_python(
        COMPILE.format(settings=settings.model_dump_json(), model=str(model), entry=str(entry))
    )
    # 16 alone lies beyond the window: the warm-up adds prompts below it, filling it, past it.
    assert [s["sequence_length"] for s in report["shapes"]] == [4, 8, 9, 16]
    assert all(g["same_tokens"] for g in report["generation"]) and len(report["generation"]) == 4
    # transformers counts a sliding window's position in a Python int: steps stay eager.
    assert report["eager_decode_steps"] > 0
    for length in (5, 13):  # within the window and beyond it, neither warmed
        served = _run_python(
            SERVE.format(
                entry=str(entry),
                private=str(tmp_path / f"private-{length}"),
                settings=settings.model_dump_json(),
                model=str(model),
                length=length,
            )
        )
        assert served["stats"]["fxgraph_cache_miss"] == 0, served["stats"]
        assert served["stats"]["fxgraph_cache_hit"] > 0, served["stats"]
        assert served["same_tokens"] and served["diff"] < 1e-4


COMPILE_WITH = """
    from pathlib import Path
    from modelwarmup.compilation.compiler import compile_model
    from modelwarmup.compilation.settings import CompileSettings
    settings = CompileSettings.model_validate_json({settings!r})
    report = compile_model(
        Path({model!r}), settings, Path({entry!r}), draft_dir=Path({draft!r}), adapters={{"tiny/lora": Path({lora!r})}}
    )
    print(report.model_dump_json())
"""

SERVE_WITH = """
    import json, sys
    from pathlib import Path
    import torch
    from modelwarmup.runtime import activate, cache_stats, compile_for_serving
    from modelwarmup.compilation.compiler import load_model
    from modelwarmup.compilation.settings import CompileSettings
    activate(Path({entry!r}), private_dir=Path({private!r}))
    settings = CompileSettings.model_validate_json({settings!r})
    model = load_model(Path({model!r}), settings)
    ids = torch.randint(0, 250, (1, 13), generator=torch.Generator().manual_seed(5))
    ask = dict(attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False)
    with torch.no_grad():
        if {how!r} == "adapter":  # as a server applies a LoRA adapter, then compiles
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, {lora!r}).eval()
            reference = model.generate(input_ids=ids, **ask)
            compile_for_serving(model.get_base_model(), settings)
            tokens = model.generate(input_ids=ids, **ask)
        elif {how!r} == "merged":  # the adapter merged into the weights: a plain model again
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, {lora!r}).merge_and_unload().eval()
            reference = model.generate(input_ids=ids, **ask)
            compile_for_serving(model, settings)
            tokens = model.generate(input_ids=ids, **ask)
        else:  # assisted generation with the draft
            reference = model.generate(ids, **ask)
            draft = compile_for_serving(load_model(Path({draft!r}), settings), settings)
            compile_for_serving(model, settings)
            tokens = model.generate(ids, assistant_model=draft, **ask)
    print(json.dumps({{"stats": cache_stats(), "same": tokens.tolist() == reference.tolist()}}))
"""


@pytest.mark.slow
def test_an_adapter_applied_with_peft_and_a_draft_for_assisted_generation_serve_warm(
    tiny_model: Path, tmp_path: Path
) -> None:
    from tests.devkit.tiny_model import make_tiny_llama, make_tiny_lora

    lora = make_tiny_lora(tmp_path / "lora", tiny_model)
    draft = make_tiny_llama(tmp_path / "draft", seed=1, num_layers=1)
    settings = CompileSettings(dtype="float32", max_length=64, sequence_lengths=(8, 24))
    entry = tmp_path / "entry"
    paths = {"model": str(tiny_model), "entry": str(entry), "draft": str(draft), "lora": str(lora)}
    report = _run_python(COMPILE_WITH.format(settings=settings.model_dump_json(), **paths))
    (adapter,) = report["adapters"]
    assert adapter["adapter"] == "tiny/lora" and adapter["warmed"]
    assert all(g["same_tokens"] for g in [*adapter["generation"], *report["assisted"]])
    assert [g["prompt_length"] for g in report["assisted"]] == [8, 24]
    for how in ("adapter", "merged", "draft"):
        served = _run_python(
            SERVE_WITH.format(
                settings=settings.model_dump_json(),
                private=str(tmp_path / f"private-{how}"),
                how=how,
                **paths,
            )
        )
        assert served["stats"]["fxgraph_cache_miss"] == 0 and served["stats"]["fxgraph_cache_hit"] > 0, (
            how,
            served,
        )
        assert served["same"], how


SERVE_IMAGE = """
    import json
    from pathlib import Path
    import torch
    from modelwarmup.runtime import activate, cache_stats, compile_for_serving
    from modelwarmup.compilation.compiler import load_model
    from modelwarmup.compilation.settings import CompileSettings
    activate(Path({entry!r}), private_dir=Path({private!r}))
    settings = CompileSettings.model_validate_json({settings!r})
    model = load_model(Path({model!r}), settings)
    text = torch.randint(3, 250, (1, 13), generator=torch.Generator().manual_seed(7))
    image = torch.tensor([[{begin}] + [{image}] * {tokens} + [{end}]])
    with_image = torch.cat([text[:, :1], image, text[:, 1:]], dim=1)
    pixels = torch.randn(1, 3, {size}, {size}, generator=torch.Generator().manual_seed(3))
    ask = dict(max_new_tokens=8, do_sample=False)
    with torch.no_grad():
        reference = model.generate(text, attention_mask=torch.ones_like(text), **ask)
        image_reference = model.generate(
            with_image, attention_mask=torch.ones_like(with_image), pixel_values=pixels, **ask
        )
        compile_for_serving(model, settings)
        tokens = model.generate(text, attention_mask=torch.ones_like(text), **ask)
        text_stats = cache_stats()
        image_tokens = model.generate(
            with_image, attention_mask=torch.ones_like(with_image), pixel_values=pixels, **ask
        )
    print(json.dumps({{"text_stats": text_stats, "same": tokens.tolist() == reference.tolist(),
                      "image_same": image_tokens.tolist() == image_reference.tolist()}}))
"""


@pytest.mark.slow
def test_a_gemma3_vision_model_serves_text_warm_and_images_compiled_on_request(tmp_path: Path) -> None:
    """Gemma 3 with a vision tower (``Gemma3ForConditionalGeneration``): the warm-up warms text
    requests and says that image requests are not warmed; a server then generates from text with
    0 misses and from an image without crashing, both with eager's tokens. Before, generate()
    refused the image (compile_for_serving's forward hid the model's ``pixel_values`` parameter)."""
    from tests.devkit.tiny_model import GEMMA3_IMAGE_SIZE, GEMMA3_IMAGE_TOKENS, make_tiny_gemma3_vision

    model, ids = make_tiny_gemma3_vision(tmp_path / "gemma3-vision")
    settings = CompileSettings(dtype="float32", max_length=64, sequence_lengths=(16,))
    entry = tmp_path / "entry"
    report = _run_python(
        COMPILE.format(settings=settings.model_dump_json(), model=str(model), entry=str(entry))
    )
    assert any("image inputs are not warmed" in note for note in report["warnings"]), report
    assert all(g["same_tokens"] for g in report["generation"])
    served = _run_python(
        SERVE_IMAGE.format(
            entry=str(entry),
            private=str(tmp_path / "private"),
            settings=settings.model_dump_json(),
            model=str(model),
            size=GEMMA3_IMAGE_SIZE,
            tokens=GEMMA3_IMAGE_TOKENS,
            **ids,
        )
    )
    assert (
        served["text_stats"]["fxgraph_cache_miss"] == 0 and served["text_stats"]["fxgraph_cache_hit"] > 0
    ), served
    assert served["same"] and served["image_same"], served
