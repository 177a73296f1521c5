"""The options of `modelwarmup warm-cache`: the seed's (`max warm-cache`) names plus our own.

One table says, for every option, whether modelwarmup *supports* it (it changes what is
downloaded or compiled), *records* it (it only concerns a running server: accepted and written
into the manifest for the server to read, never part of the cache key) or *rejects* it (with the
reason). The argparse parser and docs/cli.md are both generated from this table.
"""

from __future__ import annotations

import argparse
import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo

from modelwarmup.contracts import compile as compile_contract
from modelwarmup.contracts import wiring

Support = Literal["supported", "recorded", "rejected"]
Kind = Literal["value", "flag", "list"]


@dataclass(frozen=True)
class Option:
    """One command-line option and what modelwarmup does with it."""

    name: str
    support: Support
    help: str
    kind: Kind = "value"
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    ours: bool = False  # not in the seed: modelwarmup's own
    default: Any = None
    value_type: type = str
    why: str = ""
    compile_field: str | None = None  # the CompileFields field this option sets

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")


SUPPORTED_ENCODINGS = compile_contract.DTYPES
SEED_ENCODINGS = ("q4_k", "q4_0", "q6_k", "float8_e4m3fn", "float4_e2m1fnx2", "gptq")
CAST = "allow-safetensors-weights-fp32-bf16-bidirectional-cast"
CAST_MISSPELT = "allow-safetensors-weights-fp32-bf6-bidirectional-cast"

_SUPPORTED = [
    Option("model-path", "supported", "Hugging Face repo id of the model to download and compile."),
    Option(
        "weight-path",
        "supported",
        "Weight file(s) in the model repo to use instead of all *.safetensors.",
        kind="list",
    ),
    Option(
        "huggingface-model-revision",
        "supported",
        "Branch, tag or commit of the model repo (config, tokenizer).",
        default="main",
    ),
    Option(
        "huggingface-weight-revision",
        "supported",
        "Branch, tag or commit for the weights; defaults to the model revision.",
    ),
    Option(
        "force-download",
        "supported",
        "Download files again even when the cache has them.",
        kind="flag",
        default=False,
    ),
    Option(
        "trust-remote-code",
        "supported",
        "Allow running modelling code shipped in the repo.",
        kind="flag",
        default=False,
    ),
    Option(
        "devices", "supported", "cpu, gpu (first GPU) or gpu:0,1; default: the first GPU if any, else CPU."
    ),
    Option(
        CAST,
        "supported",
        "Allow casting float32 <-> bfloat16 safetensors weights to the requested encoding.",
        kind="flag",
        default=False,
        aliases=(CAST_MISSPELT,),
    ),
    Option(
        "draft-model-path",
        "supported",
        "Repo id of a draft model to download with the model; compiled inside assisted generation.",
    ),
    Option("draft-weight-path", "supported", "Weight file(s) of the draft model.", kind="list"),
    Option("draft-huggingface-model-revision", "supported", "Revision of the draft model.", default="main"),
    Option("draft-huggingface-weight-revision", "supported", "Revision of the draft model's weights."),
    Option(
        "draft-force-download", "supported", "Download the draft model again.", kind="flag", default=False
    ),
    Option(
        "draft-trust-remote-code",
        "supported",
        "Allow the draft repo's modelling code.",
        kind="flag",
        default=False,
    ),
    Option(
        "lora-paths", "supported", "LoRA adapter repo ids (repo or repo@revision) to download.", kind="list"
    ),
    Option(
        "chat-template",
        "supported",
        "A chat template (file path or text) stored with the entry for the server.",
    ),
    Option(
        "custom-architectures",
        "supported",
        "module[:path] exposing ARCHITECTURES (model classes) to register.",
        kind="list",
    ),
    Option("config-file", "supported", "YAML file of option values (names as on the command line)."),
    Option("section-name", "supported", "Section of --config-file to read."),
    Option("served-model-name", "recorded", "Client-facing model name, recorded for the server."),
    Option(
        "target",
        "supported",
        "Platform to compile for (cpu, cuda, cuda:sm_90); must be the hardware present.",
        why="Inductor compiles by running on the device: a target other than the present hardware is rejected.",
    ),
    Option(
        "force",
        "supported",
        "Rebuild the cache entry even when a complete one exists.",
        kind="flag",
        default=False,
    ),
]

_OURS = [
    Option(
        "cache-dir",
        "supported",
        "The cache volume: hf/ (HF_HOME) and compiled/ live here.",
        ours=True,
        default="/cache",
    ),
    Option(
        "allow-patterns",
        "supported",
        "Extra files (globs) of the model repo to download.",
        kind="list",
        ours=True,
    ),
    Option(
        "ignore-patterns",
        "supported",
        "Files (globs) of the model repo never to download.",
        kind="list",
        ours=True,
    ),
    Option(
        "compile",
        "supported",
        "Compile after downloading (--no-compile only downloads).",
        kind="flag",
        default=True,
        ours=True,
    ),
    Option("token-file", "supported", "File holding the Hugging Face token (else HF_TOKEN).", ours=True),
    Option(
        "pin",
        "supported",
        "A revision already resolved, as REPO@REVISION=COMMIT: download COMMIT and record it as "
        "REVISION (the operator pins every target of a resource to one commit).",
        kind="list",
        ours=True,
    ),
    Option(
        "resolve-only",
        "supported",
        "Resolve the revisions of the model, draft and adapters to commits, report them as pins "
        "in the summary and stop: nothing is downloaded.",
        kind="flag",
        default=False,
        ours=True,
    ),
    Option(
        "termination-log",
        "supported",
        "Where the JSON summary is also written.",
        ours=True,
        default=wiring.TERMINATION_LOG,
    ),
    Option(
        "lock-timeout",
        "supported",
        "Seconds to wait for another worker building the same entry.",
        value_type=float,
        default=3600.0,
        ours=True,
    ),
]

_SERVER_ONLY_VALUES = [
    ("cache-strategy", "KV cache strategy."),
    ("ce-delay-ms", "Scheduler sleep before a prefill batch."),
    ("data-parallel-degree", "Data-parallel replicas."),
    ("device-memory-utilization", "Fraction of device memory the server takes."),
    ("ep-size", "Expert-parallel size."),
    ("gpu-profiling", "GPU profiling of the server."),
    ("host-kvcache-swap-space-gb", "Host memory for swapped KV cache."),
    ("kv-cache-page-size", "Tokens per KV cache page."),
    ("kvcache-ce-watermark", "KV usage threshold for scheduling prefill."),
    ("max-batch-input-tokens", "Target un-encoded tokens per batch."),
    ("max-batch-total-tokens", "Limit of context tokens in a batch."),
    ("max-lora-rank", "Largest LoRA rank."),
    ("max-num-loras", "Active LoRAs per batch."),
    ("max-num-steps", "Multi-step scheduling steps."),
    ("max-queue-size-tg", "Decode queue size."),
    ("min-batch-size-tg", "Soft floor of the decode batch."),
    ("num-speculative-tokens", "Speculative tokens per step."),
    ("pipeline-role", "Prefill, decode or both."),
    ("speculative-method", "Speculative decoding method."),
    ("zmq-endpoint-base", "ZMQ IPC endpoint prefix."),
    ("use-experimental-kernels", "MAX engine's experimental kernels (no torch equivalent)."),
    ("use-vendor-blas", "MAX engine's vendor BLAS switch (no torch equivalent)."),
    ("vision-config-overrides", "Vision config overrides read by the server."),
    ("draft-devices", "Devices of the draft model."),
    ("draft-quantization-encoding", "Encoding of the draft model."),
    ("draft-config-file", "Config file of the draft model."),
    ("draft-section-name", "Config section of the draft model."),
    ("draft-served-model-name", "Client-facing name of the draft model."),
    ("draft-data-parallel-degree", "Data-parallel replicas of the draft model."),
    ("draft-vision-config-overrides", "Vision config overrides of the draft model."),
]
_SERVER_ONLY_FLAGS = [
    ("defer-resolve", "Defer resolving the pipeline config."),
    ("enable-chunked-prefill", "Chunked prefill."),
    ("enable-echo", "Echo capability."),
    ("enable-in-flight-batching", "In-flight batching."),
    ("enable-kvcache-swapping-to-host", "KV cache swapping to host."),
    ("enable-lora", "LoRA serving."),
    ("enable-min-tokens", "min_tokens support."),
    ("enable-overlap-scheduler", "Overlap scheduler."),
    ("enable-penalties", "Frequency and presence penalties."),
    ("enable-prefix-caching", "Prefix caching."),
    ("enable-prioritize-first-decode", "Decode right after prefill."),
    ("enable-structured-output", "Structured output."),
    ("enable-variable-logits", "Ragged logits for echo and speculation."),
    ("execute-empty-batches", "Run empty batches."),
    ("pool-embeddings", "Pool embeddings."),
    ("use-legacy-module", "MAX engine's legacy Module architecture (no torch equivalent)."),
    ("draft-use-subgraphs", "Subgraphs of the draft model (it is compiled with the model's settings)."),
    (f"draft-{CAST_MISSPELT}", "Weight casting of the draft model (it is compiled in the model's dtype)."),
]
_REJECTED = [
    Option(
        "rope-type",
        "rejected",
        "RoPE type for GGUF weights.",
        why="Only matters for GGUF weights; modelwarmup loads safetensors only.",
    ),
    Option(
        "draft-rope-type",
        "rejected",
        "RoPE type of GGUF draft weights.",
        why="GGUF weights are not supported.",
    ),
]

# Compile flags the seed has (the others are modelwarmup's own), and notes beside their help.
_SEED_COMPILE_FLAGS = frozenset({"quantization-encoding", "max-length", "max-batch-size", "use-subgraphs"})
_COMPILE_NOTES = {
    "dtype": "GGUF/GPTQ/FP8/FP4 encodings of the seed ("
    + ", ".join(SEED_ENCODINGS)
    + ") have no torch.compile path here and are rejected.",
    "extra_options": "KEY=VALUE, the value as JSON; repeatable.",
}


def camel_to_flags(text: str) -> str:
    """A compile field's docs or errors name its siblings in the resource's spelling (maxLength);
    on the command line they are flags (--max-length)."""
    for name in compile_contract.CompileFields.model_fields:
        if to_camel(name) != name:  # one-word names (dtype, mode) are plain words in the text
            text = re.sub(rf"\b{to_camel(name)}\b", f"--{compile_contract.flag(name)}", text)
    return text


def _compile_option(name: str, info: FieldInfo) -> Option:
    """The option for one compile field: its flag, kind, choices, default and help, from the field."""
    annotation = info.annotation
    flag = compile_contract.flag(name)
    kind: Kind = "value"
    value_type: type = str
    choices: tuple[str, ...] = ()
    if annotation is bool:
        kind = "flag"
    elif typing.get_origin(annotation) in (tuple, dict):
        kind = "list"
        args = typing.get_args(annotation)
        value_type = int if typing.get_origin(annotation) is tuple and args and args[0] is not str else str
    elif typing.get_origin(annotation) is typing.Literal:
        choices = tuple(typing.get_args(annotation))
    elif annotation is int:
        value_type = int
    default = info.get_default(call_default_factory=True)
    help_text = camel_to_flags(" ".join((info.description or "").split()))
    return Option(
        flag,
        "supported",
        help_text,
        kind=kind,
        choices=choices,
        ours=flag not in _SEED_COMPILE_FLAGS,
        default=default if default not in ((), {}) else None,
        value_type=value_type,
        why=_COMPILE_NOTES.get(name, ""),
        compile_field=name,
    )


COMPILE_OPTIONS: tuple[Option, ...] = tuple(
    _compile_option(name, info) for name, info in compile_contract.CompileFields.model_fields.items()
)

RECORD_WHY = "Concerns a running server only: recorded in the manifest for it, not part of the cache key."
OPTIONS: tuple[Option, ...] = (
    *_SUPPORTED,
    *COMPILE_OPTIONS,
    *_OURS,
    *(Option(n, "recorded", h, why=RECORD_WHY) for n, h in _SERVER_ONLY_VALUES),
    *(Option(n, "recorded", h, kind="flag", why=RECORD_WHY) for n, h in _SERVER_ONLY_FLAGS),
    *_REJECTED,
)
RECORDED = frozenset(o.dest for o in OPTIONS if o.support == "recorded")
REJECTED = {o.dest: o for o in OPTIONS if o.support == "rejected"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option of the table to a parser; defaults are applied later, after --config-file."""
    for option in OPTIONS:
        names = [f"--{option.name}", *(f"--{alias}" for alias in option.aliases)]
        common: dict[str, Any] = {"dest": option.dest, "default": None, "help": option.help}
        if option.kind == "flag":
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif option.kind == "list":
            parser.add_argument(*names, nargs="+", action="extend", type=option.value_type, **common)
        else:
            # choices are checked later, so that the message can list what is supported
            parser.add_argument(*names, type=option.value_type, metavar=option.dest.upper(), **common)


def render_cli_docs() -> str:
    """docs/cli.md: every seed option and what modelwarmup does with it."""
    lines = [
        "<!-- Generated by `make generate` from operator/modelwarmup/worker/options.py; do not edit by hand. -->",
        "# `modelwarmup warm-cache` options",
        "",
        "Modelled on Modular's `max warm-cache`: its option names are accepted with its meaning.",
        "**supported**: changes what is downloaded or compiled (part of the cache key where it changes",
        "compiled code). **recorded**: accepted and written into the manifest's `server_options` for the",
        "server to read; never part of the cache key. **rejected**: fails with the reason.",
        "Every flag also has its `--no-` form. `--config-file` takes the same names (dashes or underscores).",
        "",
        "| option | status | what it does | note |",
        "| --- | --- | --- | --- |",
    ]
    for option in OPTIONS:
        flags = ", ".join(f"`--{n}`" for n in (option.name, *option.aliases))
        status = option.support + (" (modelwarmup's own)" if option.ours else "")
        note = option.why
        if option.choices:
            note = ("one of " + ", ".join(f"`{c}`" for c in option.choices) + ". " + note).strip()
        if option.default not in (None, False):
            note = f"default `{option.default}`. {note}".strip()
        lines.append(f"| {flags} | {status} | {option.help} | {note} |")
    lines.append("")
    lines.append("Exit codes: 0 success; 2 bad command line; 10 permanent failure (bad option value, missing")
    lines.append(
        "repository or revision, gated repository, bad token, compiled output differs from eager); 11"
    )
    lines.append("transient failure (network, hub 5xx, checksum mismatch, entry locked by another worker); 1")
    lines.append(
        "anything unexpected (reason `Failed`, retried like a transient failure). Exits 0, 1, 10 and 11"
    )
    lines.append("write the JSON summary to stdout and to `--termination-log`.")
    lines.append("")
    return "\n".join(lines)
