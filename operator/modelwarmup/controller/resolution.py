"""One commit for every target: a branch or tag is resolved once, by a Job, and then pinned.

Each target's warm-up would otherwise resolve ``revision: main`` itself, at its own time, and two
targets could end at two commits (with the Deployments annotated for one of them). So when any
revision of the model, its draft or its adapters is not a commit, the operator first runs one
small Job (``warm-cache --resolve-only``: no GPU, no cache volume, nothing downloaded) and keeps
what it reports as ``status.pinnedRevisions``; every target's Job then gets them as ``--pin``,
and its warm-up key holds the commits. A new value of the annotation
``refresh.modelwarmup.dev/requested-at`` (or a change of what the revisions are resolved from)
resolves them again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.spec import COMMIT, ModelSource, ModelWarmupSpec, RepoRef
from modelwarmup.contracts import digest, wiring
from modelwarmup.controller import naming

TARGET_NAME = "resolve"  # the resolve Job's name part where a target's name would be


def revisions(spec: ModelWarmupSpec) -> list[RepoRef]:
    """The repositories a warm-up downloads, each at its revision: model, draft, adapters."""
    return [spec.model, *([spec.model.draft] if spec.model.draft else []), *spec.model.loras]


def needed(spec: ModelWarmupSpec) -> bool:
    """Some revision is a branch or a tag (a commit needs no resolving)."""
    return any(not re.fullmatch(COMMIT, ref.revision) for ref in revisions(spec))


def key(mw: ModelWarmup, worker_image: str) -> str:
    """What a resolution depends on: the revisions, the hub and the credentials to ask it with,
    the worker that asks, and the refresh annotation. Resources with equal keys share one Job."""
    spec = mw.spec
    inputs: dict[str, Any] = {
        "revisions": [f"{ref.repo}@{ref.revision}" for ref in revisions(spec)],
        "endpoint": spec.model.endpoint,
        "token": spec.model.token_secret_ref.model_dump(mode="json") if spec.model.token_secret_ref else None,
        "worker": spec.worker.model_dump(
            mode="json", include={"image_pull_policy", "service_account_name", "env"}
        ),
        "worker_image": worker_image,
        "refresh": mw.metadata.annotations.get(wiring.ANNOTATION_REFRESH, ""),
    }
    return digest.digest(inputs, length=10)


@dataclass(frozen=True)
class Resolution:
    """The resolution a resource needs: its key, and the pins once they are known."""

    key: str
    pins: tuple[str, ...] = ()

    @property
    def done(self) -> bool:
        return bool(self.pins)


def known(mw: ModelWarmup, worker_image: str) -> Resolution | None:
    """None when every revision is a commit; else the resolution, with the pins the status holds
    for this very key (a spec change or a refresh makes a new key, and so a new resolution)."""
    if not needed(mw.spec):
        return None
    current = key(mw, worker_image)
    if mw.status.resolution_key == current and mw.status.pinned_revisions:
        return Resolution(current, tuple(mw.status.pinned_revisions))
    return Resolution(current)


def commit_of(pins: tuple[str, ...], ref: RepoRef) -> str | None:
    named = f"{ref.repo}@{ref.revision}="
    return next((pin[len(named) :] for pin in pins if pin.startswith(named)), None)


def job_name(mw: ModelWarmup, resolution_key: str) -> str:
    return naming.job_name(mw.metadata.name, TARGET_NAME, resolution_key)


def job_labels(mw: ModelWarmup, resolution_key: str) -> dict[str, str]:
    """Found by its key as a target's Job is (``warmup-key``), told apart by its role."""
    return {
        wiring.MANAGED_BY: wiring.OPERATOR,
        wiring.LABEL_RESOURCE: naming.label_value(mw.metadata.name),
        wiring.LABEL_WARMUP_KEY: resolution_key,
        wiring.LABEL_ROLE: wiring.ROLE_RESOLVE,
    }


def worker_args(spec: ModelWarmupSpec) -> list[str]:
    """``warm-cache --resolve-only`` for every repository of the spec (the cache is a scratch dir)."""
    model = spec.model
    args = [
        "warm-cache",
        "--resolve-only",
        "--no-compile",
        "--model-path", model.repo,
        "--huggingface-model-revision", model.revision,
        "--cache-dir", "/tmp/resolve",
        "--termination-log", wiring.TERMINATION_LOG,
    ]  # fmt: skip
    return args + extra_repository_args(model)


def extra_repository_args(model: ModelSource) -> list[str]:
    """The worker flags naming the draft model and the adapters, each at its revision."""
    args: list[str] = []
    if model.draft is not None:
        args += [
            "--draft-model-path",
            model.draft.repo,
            "--draft-huggingface-model-revision",
            model.draft.revision,
        ]
    if model.loras:
        args += ["--lora-paths", *(f"{lora.repo}@{lora.revision}" for lora in model.loras)]
    return args
