"""Turn a `warm-cache` command line (and its --config-file) into one validated request.

Order of precedence: the command line, then the config file's section, then the defaults of the
option table. Values are checked here, once, with messages that list what is supported, so the
rest of the worker works on a typed request and never on raw strings.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict

from modelwarmup import errors
from modelwarmup.api.spec import COMMIT, DEVICES, REPO_ID, REVISION, revision_problem
from modelwarmup.compilation.settings import CompileSettings
from modelwarmup.contracts import compile as compile_contract
from modelwarmup.worker import options


class RepoRequest(BaseModel):
    """One repository to download: the model, its draft model or a LoRA adapter."""

    model_config = ConfigDict(frozen=True)

    repo: str
    revision: str = "main"
    weight_revision: str | None = None
    weight_paths: tuple[str, ...] = ()
    force_download: bool = False
    trust_remote_code: bool = False
    allow_patterns: tuple[str, ...] = ()
    ignore_patterns: tuple[str, ...] = ()
    role: str = "model"
    pinned: str | None = None
    """The commit ``revision`` was already resolved to (``--pin``): asked for instead of the revision."""

    @property
    def pin(self) -> str:
        """``repo@revision``: what a ``--pin`` names."""
        return f"{self.repo}@{self.revision}"


class WarmCacheRequest(BaseModel):
    """Everything one warm-cache run needs, validated."""

    model_config = ConfigDict(frozen=True)

    model: RepoRequest
    draft: RepoRequest | None = None
    loras: tuple[RepoRequest, ...] = ()
    compile: CompileSettings | None
    devices: str | None = None
    target: str | None = None
    allow_dtype_cast: bool = False
    chat_template: str | None = None
    custom_architectures: tuple[str, ...] = ()
    served_model_name: str | None = None
    server_options: dict[str, Any] = {}
    cache_dir: Path
    force: bool = False
    resolve_only: bool = False
    token_file: Path | None = None
    termination_log: Path | None = None
    lock_timeout_s: float = 3600.0

    @property
    def repos(self) -> list[RepoRequest]:
        """Every repository to download: the model, its draft, its adapters, in that order."""
        return [self.model, *([self.draft] if self.draft else []), *self.loras]


def _config_values(path: str, section: str | None) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise errors.InvalidOptionError(f"--config-file {path}: cannot read it: {error}") from None
    if section is not None:
        if section not in data:
            raise errors.InvalidOptionError(
                f"--section-name {section!r} is not in {path}; it has: {', '.join(map(str, data)) or 'nothing'}"
            )
        data = data[section]
    if not isinstance(data, dict):
        raise errors.InvalidOptionError(f"--config-file {path}: expected a mapping of option names to values")
    values: dict[str, Any] = {}
    known = {o.dest: o for o in options.OPTIONS}
    for key, value in data.items():
        dest = str(key).lstrip("-").replace("-", "_")
        if dest == options.CAST_MISSPELT.replace("-", "_"):
            dest = options.CAST.replace("-", "_")
        if dest not in known:
            raise errors.InvalidOptionError(f"--config-file {path}: unknown option {key!r}")
        values[dest] = _typed(known[dest], value, path)
    return values


def _typed(option: options.Option, value: Any, path: Any) -> Any:
    """A config-file value of the type its option takes, as the command line would give it: a
    flag is true or false (not "no", which Python would call true), a list a list, a number a
    number."""
    where = f"--config-file {path}: {option.name}"
    if value is None:
        return None
    if option.kind == "flag":
        if not isinstance(value, bool):
            raise errors.InvalidOptionError(f"{where}: {value!r} is not true or false")
        return value
    if option.kind == "list":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, str | int | float) and not isinstance(i, bool) for i in items):
            raise errors.InvalidOptionError(f"{where}: {value!r} is not a list of values")
        return [str(i) for i in items]
    if isinstance(value, bool | dict | list):
        raise errors.InvalidOptionError(f"{where}: {value!r} is not a single value")
    if option.value_type in (int, float):
        try:
            return option.value_type(value)
        except (TypeError, ValueError):
            raise errors.InvalidOptionError(f"{where}: {value!r} is not a number") from None
    return str(value)


def merged_values(args: argparse.Namespace) -> dict[str, Any]:
    """Command line over config file over defaults, keyed by option dest."""
    given = {k: v for k, v in vars(args).items() if v is not None}
    if "section_name" in given and "config_file" not in given:
        raise errors.InvalidOptionError("--section-name needs --config-file (the file whose section to read)")
    from_file = (
        _config_values(given["config_file"], given.get("section_name")) if "config_file" in given else {}
    )
    values = {o.dest: o.default for o in options.OPTIONS}
    values.update(from_file)
    values.update(given)
    return values


def _check_repo(flag: str, repo: Any) -> str:
    if not isinstance(repo, str) or not re.fullmatch(REPO_ID, repo) or "--" in repo or ".." in repo:
        raise errors.InvalidOptionError(f"--{flag} {repo!r} is not a Hugging Face repo id (like 'org/name')")
    return repo


def _check_revision(flag: str, revision: Any) -> str | None:
    if revision is None:
        return None
    if not isinstance(revision, str) or not re.fullmatch(REVISION, revision) or revision_problem(revision):
        raise errors.InvalidOptionError(
            f"--{flag} {revision!r} is not a branch, tag or commit (git's ref rules: no '..', "
            "no component starting or ending with '.', no '.lock' ending)"
        )
    return revision


def _pins(items: list[str]) -> dict[str, str]:
    """``--pin REPO@REVISION=COMMIT`` values, by ``REPO@REVISION``."""
    pins: dict[str, str] = {}
    for item in items:
        named, sep, commit = str(item).rpartition("=")
        repo, at, revision = named.partition("@")
        if not (sep and at and re.fullmatch(COMMIT, commit)):
            raise errors.InvalidOptionError(f"--pin {item!r}: use REPO@REVISION=COMMIT (a 40-character sha)")
        _check_repo("pin", repo)
        _check_revision("pin", revision)
        if pins.setdefault(named, commit) != commit:
            raise errors.InvalidOptionError(f"--pin {named} is given two different commits")
    return pins


def _check_pins_used(pins: dict[str, str], repos: list[RepoRequest]) -> None:
    """A pin that names none of the requested revisions is an error (a typo, a stale pin)."""
    unused = set(pins) - {r.pin for r in repos}
    if unused:
        asked = ", ".join(sorted({r.pin for r in repos}))
        raise errors.InvalidOptionError(
            f"--pin {', '.join(sorted(unused))} names no requested revision ({asked})"
        )


def _pinned(repo: RepoRequest, pins: dict[str, str]) -> RepoRequest:
    """The repository with the commit its revision is pinned to, if any."""
    return repo.model_copy(update={"pinned": pins[repo.pin]}) if repo.pin in pins else repo


def _lora(spec: str) -> RepoRequest:
    repo, _, revision = spec.partition("@")
    return RepoRequest(
        repo=_check_repo("lora-paths", repo),
        revision=_check_revision("lora-paths", revision or "main") or "main",
        role="lora",
    )


def _inductor_options(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs, each KEY a setting of torch._inductor.config: checked now, before anything
    is downloaded, not when compilation starts."""
    from torch._inductor import config as inductor_config

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise errors.InvalidOptionError(f"--inductor-option {item!r}: expected KEY=VALUE")
        head = key.split(".")[0]
        if not hasattr(inductor_config, head):
            raise errors.InvalidOptionError(
                f"--inductor-option {key!r}: torch._inductor.config has no such setting"
            )
        try:
            parsed[key] = json.loads(raw)
        except json.JSONDecodeError:
            parsed[key] = raw
    return parsed


CHAT_TEMPLATE_LIMIT = 1 << 20


def _chat_template(value: str | None) -> str | None:
    """A Jinja chat template, given as its text or as a file holding it. Either way it must look
    like one (``{{`` or ``{%``): a mistyped path is not stored as the template, and a file that
    is no template (``/etc/shadow``) is not copied into the shared volume."""
    if value is None:
        return None
    path = Path(value)
    text, from_file = value, len(value) < 4096 and path.is_file()
    if from_file:
        if path.stat().st_size > CHAT_TEMPLATE_LIMIT:
            raise errors.InvalidOptionError(
                f"--chat-template {value}: larger than {CHAT_TEMPLATE_LIMIT} bytes"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise errors.InvalidOptionError(
                f"--chat-template {value}: cannot read it as text: {error}"
            ) from None
    if "{{" not in text and "{%" not in text:
        shown = value if len(value) < 200 else value[:200] + "…"
        what = (
            "a file that holds no Jinja template"
            if from_file
            else "neither a file that exists nor a Jinja template"
        )
        raise errors.InvalidOptionError(f"--chat-template {shown!r}: {what} (no '{{{{' or '{{%')")
    return text


def _compile_settings(fields: dict[str, Any]) -> CompileSettings:
    try:
        return CompileSettings.model_validate(fields)
    except pydantic.ValidationError as error:
        raise errors.InvalidOptionError("; ".join(_flag_problems(error, fields))) from None


def _flag_problems(error: pydantic.ValidationError, fields: dict[str, Any]) -> list[str]:
    """Validation errors of the compile settings, each naming the flag that set the field."""
    problems = []
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]) if item["loc"] else ""
        message = options.camel_to_flags(item["msg"].removeprefix("Value error, "))
        if name in compile_contract.CompileFields.model_fields:
            value = fields.get(name)
            shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
            problems.append(f"--{compile_contract.flag(name)} {shown!r}: {message}")
        else:
            problems.append(f"{name or 'compile settings'}: {message}")
    return problems


def _compile_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The compile settings' fields from the option values, each read from its own flag."""
    fields: dict[str, Any] = {}
    for option in options.COMPILE_OPTIONS:
        value = values.get(option.dest)
        if value is None or option.compile_field is None:
            continue  # the field's own default
        if option.compile_field == "extra_options":
            value = _inductor_options(value)
        elif isinstance(value, list):
            value = tuple(value)
        fields[option.compile_field] = value
    return fields


def with_device(settings: CompileSettings, device: str) -> CompileSettings:
    """The settings for the device the worker resolved (validated again: float16 on CPU, say)."""
    return _compile_settings({**settings.model_dump(), "device": device})


def build_request(args: argparse.Namespace) -> WarmCacheRequest:
    """Validate the parsed command line into a request; raises errors.InvalidOptionError."""
    values = merged_values(args)
    for dest, option in options.REJECTED.items():
        if values.get(dest) is not None:
            raise errors.InvalidOptionError(f"--{option.name} is not supported: {option.why}")
    if not values.get("model_path"):
        raise errors.InvalidOptionError("--model-path is required (a Hugging Face repo id like 'org/name')")

    devices = values.get("devices")
    if devices is not None and not re.fullmatch(DEVICES, str(devices)):
        raise errors.InvalidOptionError(f"--devices {devices!r}: use cpu, gpu or gpu:0,1")
    # Checked before anything is downloaded, also with --no-compile.
    compile_settings = _compile_settings(
        {**_compile_fields(values), "trust_remote_code": bool(values["trust_remote_code"])}
    )

    model_revision = (
        _check_revision("huggingface-model-revision", values["huggingface_model_revision"]) or "main"
    )
    model = RepoRequest(
        repo=_check_repo("model-path", values["model_path"]),
        revision=model_revision,
        weight_revision=_check_revision(
            "huggingface-weight-revision", values.get("huggingface_weight_revision")
        ),
        weight_paths=tuple(values.get("weight_path") or ()),
        force_download=bool(values["force_download"]),
        trust_remote_code=bool(values["trust_remote_code"]),
        allow_patterns=tuple(values.get("allow_patterns") or ()),
        ignore_patterns=tuple(values.get("ignore_patterns") or ()),
    )
    draft = None
    if values.get("draft_model_path"):
        draft = RepoRequest(
            repo=_check_repo("draft-model-path", values["draft_model_path"]),
            revision=_check_revision(
                "draft-huggingface-model-revision", values["draft_huggingface_model_revision"]
            )
            or "main",
            weight_revision=_check_revision(
                "draft-huggingface-weight-revision", values.get("draft_huggingface_weight_revision")
            ),
            weight_paths=tuple(values.get("draft_weight_path") or ()),
            force_download=bool(values["draft_force_download"]),
            trust_remote_code=bool(values["draft_trust_remote_code"]),
            role="draft",
        )
    loras = [_lora(spec) for spec in values.get("lora_paths") or ()]
    pins = _pins(values.get("pin") or [])
    _check_pins_used(pins, [model, *([draft] if draft else []), *loras])
    model = _pinned(model, pins)
    draft = _pinned(draft, pins) if draft is not None else None
    loras = [_pinned(lora, pins) for lora in loras]
    if not values["compile"] and values.get("aot_inductor"):
        raise errors.InvalidOptionError(
            "--aot-inductor needs compilation: drop --no-compile or --aot-inductor"
        )
    lock_timeout = float(values["lock_timeout"])
    if not lock_timeout >= 0:
        raise errors.InvalidOptionError(f"--lock-timeout {values['lock_timeout']}: must be 0 or more seconds")
    cache_dir = Path(values["cache_dir"])
    if cache_dir.exists() and not cache_dir.is_dir():
        raise errors.InvalidOptionError(f"--cache-dir {cache_dir} is a file, not a folder")
    token_file = values.get("token_file")
    termination_log = values.get("termination_log")
    return WarmCacheRequest(
        model=model,
        draft=draft,
        loras=tuple(loras),
        compile=compile_settings if values["compile"] else None,
        devices=devices,
        target=values.get("target"),
        allow_dtype_cast=bool(values[options.CAST.replace("-", "_")]),
        chat_template=_chat_template(values.get("chat_template")),
        custom_architectures=tuple(values.get("custom_architectures") or ()),
        served_model_name=values.get("served_model_name"),
        server_options={k: v for k, v in values.items() if k in options.RECORDED and v is not None},
        cache_dir=cache_dir,
        force=bool(values["force"]),
        resolve_only=bool(values.get("resolve_only")),
        token_file=Path(token_file) if token_file else None,
        termination_log=Path(termination_log) if termination_log else None,
        lock_timeout_s=lock_timeout,
    )
