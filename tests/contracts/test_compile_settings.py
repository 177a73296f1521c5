"""One set of compile fields: every valid spec.compile becomes a worker request the worker accepts,
with the same settings, and the worker's options are views of the same fields."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelwarmup import errors, manifests
from modelwarmup.api.spec import ModelWarmupSpec
from modelwarmup.compilation.settings import CompileSettings
from modelwarmup.contracts import compile as compile_contract
from modelwarmup.contracts.compile import CompileFields
from modelwarmup.controller import jobs
from modelwarmup.worker import options, request

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# Each field at its bounds and every choice, one change at a time over examples/minimal.yaml.
GENERATED: list[dict[str, Any]] = [
    *({"dtype": dtype} for dtype in compile_contract.DTYPES),
    *({"mode": mode} for mode in compile_contract.MODES),
    {"maxLength": 2},
    {"maxLength": 2, "sequenceLengths": [1, 2]},
    {"maxLength": compile_contract.MAX_SIZE, "sequenceLengths": [compile_contract.MAX_SIZE]},
    {"maxBatchSize": 4096, "batchSizes": [1, 2, 4096]},
    {"maxBatchSize": 8, "batchSizes": [8]},
    {"sequenceLengths": [1, 7, 2048]},
    {"regional": False},
    {"aotInductor": True},
    {"extraOptions": {"freezing": True, "triton.cudagraphs": False, "max_autotune_gemm_backends": "ATEN"}},
    {"extraOptions": {"coordinate_descent_tuning": 1, "epilogue_fusion_first": 0.5}},
]


def _specs() -> list[tuple[str, ModelWarmupSpec]]:
    found = []
    for path in EXAMPLES:
        for body in manifests.load_documents(path):
            if manifests.is_modelwarmup(body):
                found.append((f"{path.name}:{body['metadata']['name']}", manifests.validate_body(body).spec))
    minimal = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    for index, change in enumerate(GENERATED):
        body = copy.deepcopy(minimal)
        body["spec"]["compile"] = {**body["spec"].get("compile", {}), **change}
        found.append((f"generated-{index}:{change}", manifests.validate_body(body).spec))
    return found


def _worker_request(args: list[str]) -> request.WarmCacheRequest:
    """What `modelwarmup warm-cache ARGS` makes of a Job's arguments (no download: parsing only)."""
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    assert args[0] == "warm-cache"
    return request.build_request(parser.parse_args(args[1:]))


@pytest.mark.parametrize(("name", "spec"), _specs(), ids=[n for n, _ in _specs()])
def test_every_valid_spec_gives_a_job_the_worker_accepts_with_the_same_settings(
    name: str, spec: ModelWarmupSpec
) -> None:
    for target in spec.targets:
        built = _worker_request(jobs.worker_args(spec, target))
        if not spec.compile.enabled:
            assert built.compile is None
            continue
        assert built.compile is not None
        asked = spec.compile.model_dump(include=set(CompileFields.model_fields))
        got = built.compile.model_dump(include=set(CompileFields.model_fields))
        if not asked["sequence_lengths"]:  # empty means the recipe's defaults
            got["sequence_lengths"] = ()
        assert got == asked, name
        assert built.compile.trust_remote_code is spec.model.trust_remote_code


def test_the_worker_options_are_views_of_the_compile_fields() -> None:
    by_field = {o.compile_field: o for o in options.COMPILE_OPTIONS}
    assert set(by_field) == set(CompileFields.model_fields)
    for name, info in CompileFields.model_fields.items():
        option = by_field[name]
        assert option.name == compile_contract.flag(name)
        default = info.get_default(call_default_factory=True)
        assert option.default == (default if default not in ((), {}) else None)
    assert by_field["dtype"].choices == compile_contract.DTYPES
    assert by_field["mode"].choices == compile_contract.MODES
    assert by_field["regional"].kind == "flag" and by_field["batch_sizes"].value_type is int


def test_the_server_side_settings_default_to_what_a_resource_defaults_to() -> None:
    """A server author building CompileSettings() gets the wrapping a default resource warmed."""
    resource_defaults = ModelWarmupSpec.model_fields["compile"].get_default(call_default_factory=True)
    assert CompileSettings().model_dump(include=set(CompileFields.model_fields) - {"sequence_lengths"}) == (
        resource_defaults.model_dump(include=set(CompileFields.model_fields) - {"sequence_lengths"})
    )


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--max-length", "1"], "--max-length 1: Input should be greater than or equal to 2"),
        (
            ["--max-batch-size", "2", "--batch-sizes", "1", "4"],
            "--batch-sizes '1 4': every entry must be <= --max-batch-size (2)",
        ),
        (["--compile-mode", "turbo"], "--compile-mode 'turbo': Input should be 'default'"),
        (["--inductor-option", "bad key=1"], "--inductor-option"),
    ],
)
def test_bad_compile_flags_name_the_flag(argv: list[str], fragment: str) -> None:
    with pytest.raises(errors.InvalidOptionError) as raised:
        _worker_request(["warm-cache", "--model-path", "org/model", *argv])
    assert fragment in str(raised.value)
