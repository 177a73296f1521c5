"""Names and labels of what the operator creates, derived from content so that every step is
idempotent: the same resource, target and settings always give the same Job name, and a create
that answers 409 means "already there"."""

from __future__ import annotations

from typing import Any, Final

from modelwarmup.api.spec import ModelWarmupSpec, Target
from modelwarmup.contracts import digest, wiring

MAX_NAME: Final = 63


def warmup_inputs(
    spec: ModelWarmupSpec,
    target: Target,
    worker_image: str,
    pins: tuple[str, ...] = (),
    rehearsed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything that decides a target's warm-up Job, as the operator can see it: the spec and
    the commits its branches and tags were pinned to (see :mod:`.resolution`).

    Resources share a Job, and so an entry, only when all of it matches: the same model, settings,
    platform and cache, and a Job they could each have run themselves (the same token Secret, the
    same tolerations, ServiceAccount and worker environment). Retry and deadline settings only
    change how long a Job tries, not whether it can succeed, and are left out. A rehearsal's key
    has what of the Deployment's template it runs instead of the compile settings (``rehearsed``:
    see :func:`modelwarmup.controller.rehearsal.template_inputs`), so editing it is drift.
    """
    return {
        "model": spec.model.model_dump(mode="json", exclude={"endpoint"}),
        "endpoint": spec.model.endpoint,
        "compile": spec.compile.model_dump(mode="json") if rehearsed is None else None,
        **({"rehearsed": rehearsed} if rehearsed is not None else {}),
        "target": target.model_dump(
            mode="json",
            include={"node_selector", "tolerations", "devices", "resources", "runtime_class_name"},
        ),
        "cache": {"claim": spec.cache.claim_name, "sub_path": spec.cache.sub_path},
        "worker": spec.worker.model_dump(
            mode="json", include={"image_pull_policy", "service_account_name", "env"}
        ),
        "worker_image": worker_image,
        "pins": sorted(pins),
    }


def warmup_key(
    spec: ModelWarmupSpec,
    target: Target,
    worker_image: str,
    pins: tuple[str, ...] = (),
    rehearsed: dict[str, Any] | None = None,
) -> str:
    """A short digest of :func:`warmup_inputs`: equal for resources that would warm the same entry."""
    return digest.digest(warmup_inputs(spec, target, worker_image, pins, rehearsed), length=10)


def job_name(resource_name: str, target_name: str, key: str) -> str:
    """``<resource>-<target>-<key>``, shortened to fit a label value (63 characters)."""
    suffix = f"-{target_name}-{key}"
    return f"{label_value(resource_name[: MAX_NAME - len(suffix)])}{suffix}"


def label_value(name: str) -> str:
    """A name cut to a label value's 63 characters, never ending in "-" or "." (the API server
    rejects both in a label value, and a Job name's last segment may not start with one)."""
    return name[:MAX_NAME].rstrip("-.")


def job_labels(resource_name: str, target_name: str, key: str) -> dict[str, str]:
    return {
        wiring.MANAGED_BY: wiring.OPERATOR,
        wiring.LABEL_RESOURCE: label_value(resource_name),
        wiring.LABEL_TARGET: target_name,
        wiring.LABEL_WARMUP_KEY: key,
    }
