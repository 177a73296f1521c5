"""warm-cache options: the seed's names and meanings, supported values, recorded server options."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.devkit.hub import LocalHub

from . import runner
from .conftest import COMPILE, SERVER_OPTIONS, TINY, Warmed


def _assert_one_line_failure(run: runner.Run, code: int, reason: str) -> None:
    assert run.returncode == code, run
    summary = run.summary
    assert summary["ok"] is False and summary["reason"] == reason, summary
    assert "\n" not in summary["message"]
    assert summary["permanent"] is (code == 10)
    assert run.termination_message == summary
    last = run.stderr.strip().splitlines()[-1]
    assert last == f"modelwarmup warm-cache: {reason}: {summary['message']}", run


def test_unsupported_encoding_fails_listing_the_supported_ones(hub: LocalHub, tmp_path: Path) -> None:
    run = runner.warm_cache(
        hub.endpoint, tmp_path / "cache", "--model-path", TINY, "--quantization-encoding", "q4_k"
    )
    _assert_one_line_failure(run, 10, "InvalidOption")
    message = run.summary["message"]
    assert "q4_k" in message
    assert all(name in message for name in ("float32", "bfloat16", "float16")), message
    assert hub.request_count == 0  # checked before anything is downloaded


def test_rejected_option_fails_with_its_reason(hub: LocalHub, tmp_path: Path) -> None:
    run = runner.warm_cache(hub.endpoint, tmp_path / "cache", "--model-path", TINY, "--rope-type", "yarn")
    _assert_one_line_failure(run, 10, "InvalidOption")
    assert "--rope-type" in run.summary["message"] and "GGUF" in run.summary["message"]


def test_unknown_option_is_a_usage_error(hub: LocalHub, tmp_path: Path) -> None:
    run = runner.warm_cache(hub.endpoint, tmp_path / "cache", "--model-path", TINY, "--no-such-option")
    assert run.returncode == 2, run
    assert "--no-such-option" in run.stderr


def test_missing_config_section_lists_the_sections(hub: LocalHub, tmp_path: Path) -> None:
    config = tmp_path / "warm.yaml"
    config.write_text(yaml.safe_dump({"small": {"model-path": TINY}, "large": {"model-path": "org/big"}}))
    run = runner.warm_cache(
        hub.endpoint, tmp_path / "cache", "--config-file", config, "--section-name", "medium"
    )
    _assert_one_line_failure(run, 10, "InvalidOption")
    assert "'medium'" in run.summary["message"] and "large, small" in run.summary["message"]


def test_float32_weights_need_the_cast_flag_for_bfloat16(hub: LocalHub, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    run = runner.warm_cache(
        hub.endpoint, cache, "--model-path", TINY, "--devices", "cpu", "--quantization-encoding", "bfloat16"
    )
    _assert_one_line_failure(run, 10, "WeightDtypeMismatch")
    assert "float32" in run.summary["message"]
    assert "--allow-safetensors-weights-fp32-bf16-bidirectional-cast" in run.summary["message"]
    assert not list((cache / "compiled").rglob("manifest.json"))
    assert not list((cache / "compiled").glob("*/.*.tmp"))  # the staging directory is removed
    # With the flag (the seed's misspelt spelling) it compiles in bfloat16: see
    # test_atomicity.test_concurrent_workers_for_the_same_key_build_it_once, which warms exactly that.


@pytest.mark.slow
def test_the_defaults_fit_the_checkpoint(warmed: Warmed) -> None:
    """No dtype and no length given: the checkpoint's float32, and maxLength 2048 capped to the
    256 positions the tiny model has, each said once on stderr; the manifest records what was
    compiled, which is what serving compiles with."""
    compiled = warmed.manifest["compile"]
    assert compiled["dtype"] == "float32"
    assert compiled["max_length"] == 256 and compiled["sequence_lengths"] == [16, 64]
    assert "dtype auto: compiling in the checkpoint's float32" in warmed.run.stderr
    assert "--max-length 2048 is above the 256 positions this model has" in warmed.run.stderr
    generated = warmed.manifest["compile_report"]["generation"]
    assert [(g["prompt_length"], g["same_tokens"]) for g in generated] == [(16, True), (64, True)]


@pytest.mark.slow
def test_server_options_are_recorded_and_do_not_change_the_key(hub: LocalHub, warmed: Warmed) -> None:
    manifest = warmed.manifest
    assert manifest["server_options"] == {
        "enable_prefix_caching": True,
        "max_num_steps": "4",
        "served_model_name": "tiny",
    }
    assert manifest["served_model_name"] == "tiny"
    for server_options in ((), ("--max-num-steps", "8", "--enable-chunked-prefill")):
        run = runner.warm_cache(hub.endpoint, warmed.cache, "--model-path", TINY, *COMPILE, *server_options)
        assert run.returncode == 0, run
        assert run.summary["cache_hit"] is True
        assert run.summary["entry_key"] == warmed.summary["entry_key"]
    assert hub.request_count == 0
    assert SERVER_OPTIONS[0] in warmed.args


@pytest.mark.slow
def test_config_file_section_gives_the_same_request(hub: LocalHub, warmed: Warmed, tmp_path: Path) -> None:
    config = tmp_path / "warm.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "tiny": {
                    "model-path": TINY,
                    "quantization_encoding": "auto",  # underscores work as well as dashes
                    "devices": "cpu",
                    "enable-prefix-caching": True,
                },
                "other": {"model-path": "org/other", "quantization-encoding": "q4_k"},
            }
        )
    )
    run = runner.warm_cache(hub.endpoint, warmed.cache, "--config-file", config, "--section-name", "tiny")
    assert run.returncode == 0, run
    assert run.summary["cache_hit"] is True
    assert run.summary["entry_key"] == warmed.summary["entry_key"]
    # The command line wins over the file: here it asks for an unsupported encoding.
    over = runner.warm_cache(
        hub.endpoint,
        warmed.cache,
        "--config-file",
        config,
        "--section-name",
        "tiny",
        "--quantization-encoding",
        "q4_k",
    )
    assert over.returncode == 10 and "q4_k" in over.summary["message"]


@pytest.mark.parametrize(
    ("args", "config", "says"),
    [
        (["--no-compile", "--aot-inductor"], None, "--aot-inductor needs compilation"),
        (["--lock-timeout", "-1"], None, "must be 0 or more seconds"),
        (["--cache-dir-is-a-file"], None, "is a file, not a folder"),
        (["--inductor-option", "no_such_setting=1"], None, "torch._inductor.config has no such setting"),
        (["--chat-template", "tempalte.jinja"], None, "neither a file that exists nor a Jinja template"),
        (["--chat-template", "/etc/hostname"], None, "a file that holds no Jinja template"),
        (["--section-name", "prod"], None, "--section-name needs --config-file"),
        ([], {"force": "no"}, "force: 'no' is not true or false"),
        ([], {"max-length": "lots"}, "max-length: 'lots' is not a number"),
        ([], {"devices": ["cpu"]}, "devices: ['cpu'] is not a single value"),
    ],
)
def test_option_values_that_would_misbehave_are_refused_before_any_download(
    hub: LocalHub, tmp_path: Path, args: list[str], config: dict[str, object] | None, says: str
) -> None:
    cache = tmp_path / "cache"
    if args == ["--cache-dir-is-a-file"]:
        cache.write_text("not a folder")
        args = []
    if config is not None:
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        args = ["--config-file", str(tmp_path / "config.yaml")]
    run = runner.warm_cache(hub.endpoint, cache, "--model-path", TINY, *args)
    _assert_one_line_failure(run, 10, "InvalidOption")
    assert says in run.summary["message"], run.summary["message"]
    assert hub.request_count == 0
