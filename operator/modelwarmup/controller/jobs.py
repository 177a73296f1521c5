"""The warm-up Job for one target, built as a plain manifest (pure: no API calls).

The pod runs `modelwarmup warm-cache` with options derived from the spec, on a node like the
serving nodes, with the cache claim mounted and the token only as a secretKeyRef. It runs under
the restricted Pod Security profile, and its ``podFailurePolicy`` fails the Job at once on the
worker's permanent exit codes while transient ones are retried up to ``backoffLimit``.
"""

from __future__ import annotations

from typing import Any

from modelwarmup import errors
from modelwarmup.api import resource
from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.spec import ModelWarmupSpec, Target
from modelwarmup.contracts import compile as compile_contract
from modelwarmup.contracts import digest, wiring
from modelwarmup.controller import naming, rehearsal, resolution
from modelwarmup.controller.settings import OperatorSettings

CONTAINER = "warm-cache"
CAST_FLAG = "--allow-safetensors-weights-fp32-bf16-bidirectional-cast"


def worker_args(spec: ModelWarmupSpec, target: Target, pins: tuple[str, ...] = ()) -> list[str]:
    """The warm-cache command line for one target, its branches and tags pinned to ``pins``."""
    model, compile_ = spec.model, spec.compile
    args = [
        "warm-cache",
        "--model-path", model.repo,
        "--huggingface-model-revision", model.revision,
        "--cache-dir", wiring.JOB_CACHE_MOUNT,
        "--termination-log", wiring.TERMINATION_LOG,
    ]  # fmt: skip
    if model.trust_remote_code:
        args.append("--trust-remote-code")
    if model.allow_patterns:
        args += ["--allow-patterns", *model.allow_patterns]
    if model.ignore_patterns:
        args += ["--ignore-patterns", *model.ignore_patterns]
    args += resolution.extra_repository_args(model)
    for pin in pins:
        args += ["--pin", pin]
    if target.devices:
        args += ["--devices", target.devices]
    if not compile_.enabled:
        return [*args, "--no-compile"]
    # Every compile field, in the worker's own flags (contracts.compile), defaults included.
    args += [*compile_contract.command_line(compile_), CAST_FLAG]  # the dtype is the user's explicit choice
    return args


def _env(spec: ModelWarmupSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": f"{wiring.JOB_CACHE_MOUNT}/hf"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.model.endpoint:
        env.append({"name": "HF_ENDPOINT", "value": spec.model.endpoint})
    if spec.model.token_secret_ref is not None:
        ref = spec.model.token_secret_ref
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    env += [{"name": e.name, "value": e.value} for e in spec.worker.env]
    return env


def owner_reference(mw: ModelWarmup) -> dict[str, Any]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.KIND,
        "name": mw.metadata.name,
        "uid": mw.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_job(
    mw: ModelWarmup, target: Target, key: str, settings: OperatorSettings, pins: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The Job manifest warming ``target`` of ``mw``."""
    return _worker_job(
        mw,
        name=naming.job_name(mw.metadata.name, target.name, key),
        labels=naming.job_labels(mw.metadata.name, target.name, key),
        args=worker_args(mw.spec, target, pins),
        env=_env(mw.spec),
        target=target,
        settings=settings,
    )


def build_resolve_job(mw: ModelWarmup, resolution_key: str, settings: OperatorSettings) -> dict[str, Any]:
    """The Job resolving the spec's branches and tags to commits: the hub's credentials, no GPU,
    any node, and no cache volume (nothing is downloaded), so it need not wait for the claim."""
    return _worker_job(
        mw,
        name=resolution.job_name(mw, resolution_key),
        labels=resolution.job_labels(mw, resolution_key),
        args=resolution.worker_args(mw.spec),
        env=_env(mw.spec),
        target=None,
        settings=settings,
        cache=False,
    )


def build_prune_job(
    mw: ModelWarmup, model_key: str, keep: list[str], settings: OperatorSettings
) -> dict[str, Any]:
    """The Job deleting entries of the model that ``model_key`` superseded (retention DeleteSuperseded).

    Named after the key it keeps, so it runs once per switch; no token, no GPU, any node.
    """
    args = ["prune", "--cache-dir", wiring.JOB_CACHE_MOUNT, "--model-path", mw.spec.model.repo]
    for kept in keep:
        args += ["--keep", kept]
    return _worker_job(
        mw,
        name=naming.job_name(mw.metadata.name, "prune", digest.digest(model_key, length=10)),
        labels={
            wiring.MANAGED_BY: wiring.OPERATOR,
            wiring.LABEL_RESOURCE: naming.label_value(mw.metadata.name),
        },
        args=args,
        env=[{"name": "PYTHONUNBUFFERED", "value": "1"}],
        target=None,
        settings=settings,
    )


def _worker_job(
    mw: ModelWarmup,
    *,
    name: str,
    labels: dict[str, str],
    args: list[str],
    env: list[dict[str, Any]],
    target: Target | None,
    settings: OperatorSettings,
    cache: bool = True,
) -> dict[str, Any]:
    """A Job running `modelwarmup ARGS` in the worker image with the cache mounted (unless
    ``cache`` is false), restricted."""
    spec = mw.spec
    resources = target.resources.model_dump(mode="json", exclude_defaults=True) if target is not None else {}
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.worker.image or settings.worker_image,
        "imagePullPolicy": spec.worker.image_pull_policy,
        "command": ["modelwarmup"],
        "args": args,
        "env": env,
        "resources": resources,
        "volumeMounts": [
            *(
                [
                    {
                        "name": "cache",
                        "mountPath": wiring.JOB_CACHE_MOUNT,
                        **({"subPath": spec.cache.sub_path} if spec.cache.sub_path else {}),
                    }
                ]
                if cache
                else []
            ),
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePath": wiring.TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [
            *(
                [{"name": "cache", "persistentVolumeClaim": {"claimName": spec.cache.claim_name}}]
                if cache
                else []
            ),
            {"name": "tmp", "emptyDir": {}},
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.worker_uid,
            "runAsGroup": settings.worker_uid,
            "fsGroup": settings.worker_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
    }
    if target is not None and target.node_selector:
        pod_spec["nodeSelector"] = dict(target.node_selector)
    if target is not None and target.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in target.tolerations
        ]
    if target is not None and target.runtime_class_name:
        pod_spec["runtimeClassName"] = target.runtime_class_name
    if spec.worker.service_account_name:
        pod_spec["serviceAccountName"] = spec.worker.service_account_name
    return _job(mw, name=name, labels=labels, pod_spec=pod_spec, container=CONTAINER)


def build_rehearsal_job(
    mw: ModelWarmup,
    target: Target,
    key: str,
    settings: OperatorSettings,
    template: dict[str, Any],
    pins: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The Job rehearsing the Deployment's server (pod template ``template``, unwired) for ``target``."""
    serving = mw.spec.serving
    assert serving is not None
    env = [
        {**e, "value": f"{serving.mount_path}/hf"} if e.get("name") == "HF_HOME" else e for e in _env(mw.spec)
    ]
    pod_spec = rehearsal.rehearsal_pod(mw, template, target, settings, rehearsal.prepare_args(mw, pins), env)
    labels = naming.job_labels(mw.metadata.name, target.name, key)
    return _job(
        mw, name=naming.job_name(mw.metadata.name, target.name, key), labels=labels, pod_spec=pod_spec
    )


def _job(
    mw: ModelWarmup,
    *,
    name: str,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    container: str | None = None,
) -> dict[str, Any]:
    """The Job around ``pod_spec``: fail at once on a permanent exit code (of ``container``, or of
    any container), retry others up to backoffLimit, ignore disruptions."""
    spec = mw.spec
    exit_codes: dict[str, Any] = {"operator": "In", "values": list(errors.PERMANENT_EXIT_CODES)}
    if container is not None:
        exit_codes["containerName"] = container
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": mw.metadata.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(mw)],
        },
        "spec": {
            "backoffLimit": spec.worker.backoff_limit,
            "activeDeadlineSeconds": spec.worker.active_deadline_seconds,
            "podFailurePolicy": {
                "rules": [
                    {"action": "FailJob", "onExitCodes": exit_codes},
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                ]
            },
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
