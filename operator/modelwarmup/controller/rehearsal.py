"""Rehearsal mode: the Job that runs the Deployment's own server, and the wiring that restores what
it compiled (pure: manifests in, manifests out).

The rehearsal Job's pod is the Deployment's pod template (unwired), reduced to the server
container, with:

* an init container of ours (``modelwarmup rehearse --prepare``) that downloads the model into the
  cache volume and leaves the launcher, a standard-library-only Python package, in an emptyDir;
* the server container's command wrapped by that launcher (``python3 -m modelwarmup.rehearsal
  ... -- COMMAND ARGS``), which starts the server with its caches redirected, sends the warm-up
  requests, stops it, verifies and publishes. So the user's image runs unchanged, on the target's
  nodes, with its own resources and GPUs. A launcher in the container, not a sidecar: the
  rehearsal must start, stop and restart the server process itself, and the Job's success must be
  the rehearsal's verdict, neither of which a sidecar can have without sharing the pod's process
  namespace. The price: the image needs ``python3`` (vLLM, SGLang and TGI images have it) and the
  container must name its ``command`` (the image's entrypoint cannot be read from the API).

Serving pods get an init container ``modelwarmup restore`` that copies the entry into an emptyDir
at the rehearsal's engine cache path, and the server container gets the same environment the
rehearsal gave it. The names of the variables we add are kept in an annotation, so unwiring
removes exactly those.
"""

from __future__ import annotations

import copy
from typing import Any

from modelwarmup.api.resource import ModelWarmup
from modelwarmup.api.spec import RehearsalSpec, Target
from modelwarmup.contracts import digest, wiring
from modelwarmup.controller.kubeapi import KubeObject
from modelwarmup.controller.serving import RUNTIME_VOLUME, restricted
from modelwarmup.controller.serving import unwired_template as builtin_unwired
from modelwarmup.controller.settings import OperatorSettings
from modelwarmup.rehearsal import engines

PREPARED_MOUNT = f"{wiring.RUNTIME_MOUNT}/rehearsal"
PREPARE_CONTAINER = "modelwarmup-prepare"
RESTORE_CONTAINER = "modelwarmup-restore"
ENGINE_VOLUME = "modelwarmup-engine-cache"
PREPARED_VOLUME = "modelwarmup-prepared"
CACHE_VOLUME = "modelwarmup-cache"
ANNOTATION_ADDED_ENV = f"{wiring.GROUP}/added-env"
DEFAULT_PORT = 8000
DEFAULT_READY_PATH = "/health"
LAUNCHER = ["python3", "-m", "modelwarmup.rehearsal"]


class TemplateProblem(ValueError):
    """The Deployment's template cannot be rehearsed as it is (the message says what to change)."""


def server_container(template: KubeObject, rehearsal: RehearsalSpec) -> KubeObject:
    containers = template.get("spec", {}).get("containers") or []
    if not containers:
        raise TemplateProblem("the Deployment's pod template has no containers")
    if rehearsal.container is None:
        return dict(containers[0])
    for container in containers:
        if container.get("name") == rehearsal.container:
            return dict(container)
    names = ", ".join(str(c.get("name")) for c in containers)
    raise TemplateProblem(f"the Deployment has no container {rehearsal.container} (it has {names})")


def ready_url(container: KubeObject, rehearsal: RehearsalSpec) -> str:
    """http://127.0.0.1:PORT/PATH from the spec, else the readinessProbe, else the first port."""
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    port: Any = rehearsal.port or probe.get("port")
    if not isinstance(port, int):
        named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
        port = named.get(port) if isinstance(port, str) else None
        port = (
            port or next((p.get("containerPort") for p in container.get("ports") or []), None) or DEFAULT_PORT
        )
    path = rehearsal.ready_path or probe.get("path") or DEFAULT_READY_PATH
    return f"http://127.0.0.1:{port}{path}"


def template_inputs(template: KubeObject, rehearsal: RehearsalSpec) -> dict[str, Any]:
    """What of the (unwired) template decides the rehearsal: a change here is drift."""
    container = server_container(template, rehearsal)
    return {
        "container": {
            name: container.get(name)
            for name in ("name", "image", "command", "args", "env", "envFrom", "resources")
        },
        "runtime_class": template.get("spec", {}).get("runtimeClassName"),
        "rehearsal": rehearsal.model_dump(mode="json"),
    }


def template_digest(template: KubeObject, rehearsal: RehearsalSpec) -> str:
    return digest.digest(template_inputs(template, rehearsal), length=12)


def check(template: KubeObject, rehearsal: RehearsalSpec) -> None:
    """Raise :class:`TemplateProblem` when the template cannot be rehearsed as it is."""
    container = server_container(template, rehearsal)
    if not container.get("command"):
        raise TemplateProblem(
            f"container {container.get('name')} sets no command: the rehearsal wraps the server's command, "
            "and an image's entrypoint cannot be read from the API; set it (e.g. command: [vllm, serve])"
        )


def _launcher_args(container: KubeObject, rehearsal: RehearsalSpec, mount: str) -> list[str]:
    command = [*(container.get("command") or []), *(container.get("args") or [])]
    args = [
        "--prepared", PREPARED_MOUNT,
        "--cache-dir", mount,
        "--ready-url", ready_url(container, rehearsal),
        "--engine-cache-path", rehearsal.engine_cache_path,
        "--timeout", str(rehearsal.timeout_seconds),
        "--termination-log", wiring.TERMINATION_LOG,
    ]  # fmt: skip
    if container.get("image"):
        args += ["--image", str(container["image"])]
    for request in rehearsal.requests:
        args += ["--request", request]
    if not rehearsal.verify:
        args.append("--no-verify")
    return [*args, "--", *command]


def _cache_mount(mw: ModelWarmup, mount: str, *, read_only: bool) -> KubeObject:
    found: KubeObject = {"name": CACHE_VOLUME, "mountPath": mount, "readOnly": read_only}
    if mw.spec.cache.sub_path:
        found["subPath"] = mw.spec.cache.sub_path
    return found


def rehearsal_pod(
    mw: ModelWarmup,
    template: KubeObject,
    target: Target,
    settings: OperatorSettings,
    prepare_args: list[str],
    prepare_env: list[KubeObject],
) -> KubeObject:
    """The rehearsal Job's pod template, from the Deployment's (unwired) pod template."""
    serving = mw.spec.serving
    assert serving is not None and serving.rehearsal is not None
    rehearsal, mount = serving.rehearsal, serving.mount_path
    check(template, rehearsal)
    original = server_container(template, rehearsal)
    container = {
        key: copy.deepcopy(value)
        for key, value in original.items()
        if key not in ("command", "args", "readinessProbe", "livenessProbe", "startupProbe", "lifecycle")
    }
    container["command"] = list(LAUNCHER)
    container["args"] = _launcher_args(original, rehearsal, mount)
    env = [e for e in container.get("env") or [] if e.get("name") != "PYTHONPATH"]
    pythonpath = next(
        (e.get("value", "") for e in original.get("env") or [] if e.get("name") == "PYTHONPATH"), ""
    )
    container["env"] = [
        *env,
        {"name": "PYTHONPATH", "value": ":".join(filter(None, [f"{PREPARED_MOUNT}/python", pythonpath]))},
    ]
    container["volumeMounts"] = [
        *(
            m
            for m in container.get("volumeMounts") or []
            if m.get("name") not in (CACHE_VOLUME, ENGINE_VOLUME)
        ),
        _cache_mount(mw, mount, read_only=False),
        {"name": PREPARED_VOLUME, "mountPath": PREPARED_MOUNT, "readOnly": True},
        {"name": ENGINE_VOLUME, "mountPath": rehearsal.engine_cache_path},
    ]
    container["terminationMessagePath"] = wiring.TERMINATION_LOG
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    prepare = {
        "name": PREPARE_CONTAINER,
        "image": mw.spec.worker.image or settings.worker_image,
        "imagePullPolicy": mw.spec.worker.image_pull_policy,
        "command": ["modelwarmup"],
        "args": prepare_args,
        "env": prepare_env,
        "volumeMounts": [
            _cache_mount(mw, mount, read_only=False),
            {"name": PREPARED_VOLUME, "mountPath": PREPARED_MOUNT},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "securityContext": restricted(),
    }
    pod: KubeObject = copy.deepcopy(template.get("spec", {}))
    pod["containers"] = [container]
    pod["initContainers"] = [prepare]  # the Deployment's own are for serving, not for this run
    pod["restartPolicy"] = "Never"
    pod["volumes"] = [
        *(
            v
            for v in pod.get("volumes") or []
            if v.get("name") not in (CACHE_VOLUME, ENGINE_VOLUME, PREPARED_VOLUME)
        ),
        {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": mw.spec.cache.claim_name}},
        {"name": PREPARED_VOLUME, "emptyDir": {}},
        {"name": ENGINE_VOLUME, "emptyDir": {}},
        *(
            []
            if any(v.get("name") == "tmp" for v in pod.get("volumes") or [])
            else [{"name": "tmp", "emptyDir": {}}]
        ),
    ]
    if target.node_selector:
        pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), **target.node_selector}
    if target.tolerations:
        pod["tolerations"] = [
            *(pod.get("tolerations") or []),
            *(t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in target.tolerations),
        ]
    if target.runtime_class_name:
        pod["runtimeClassName"] = target.runtime_class_name
    return pod


def prepare_args(mw: ModelWarmup, pins: tuple[str, ...]) -> list[str]:
    """``modelwarmup rehearse --prepare``: the model, pinned to the commit it was resolved to."""
    serving = mw.spec.serving
    assert serving is not None
    model = mw.spec.model
    args = [
        "rehearse",
        "--prepare", PREPARED_MOUNT,
        "--cache-dir", serving.mount_path,
        "--model-path", model.repo,
        "--huggingface-model-revision", model.revision,
        "--ready-url", "http://127.0.0.1/",  # the launcher's, not used here
    ]  # fmt: skip
    own = next((p for p in pins if p.startswith(f"{model.repo}@")), None)
    if own is not None:
        args += ["--pin", own.rpartition("=")[2]]
    return args


def serving_env(container: KubeObject, rehearsal: RehearsalSpec, mount: str) -> dict[str, str]:
    """The environment the rehearsal gave the server, which serving pods set too."""
    own = {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "name" in e}
    return {
        "HF_HOME": f"{mount}/hf",
        "HF_HUB_OFFLINE": "1",
        **engines.serving_env(rehearsal.engine_cache_path, own),
    }


def wired_template(template: KubeObject, mw: ModelWarmup, key: str, runtime_image: str) -> KubeObject:
    """The pod template restoring rehearsed entry ``key`` (``rehearsed/<key>``) before the server starts."""
    serving = mw.spec.serving
    assert serving is not None and serving.rehearsal is not None
    rehearsal, mount = serving.rehearsal, serving.mount_path
    new = fully_unwired(template)
    pod = new.setdefault("spec", {})
    name = server_container(new, rehearsal).get("name")
    engine_mount = {"name": ENGINE_VOLUME, "mountPath": rehearsal.engine_cache_path}
    cache_mount = _cache_mount(mw, mount, read_only=True)
    added: list[str] = []
    for container in pod.get("containers") or []:
        if container.get("name") != name:
            continue
        env_vars = serving_env(container, rehearsal, mount)
        added = sorted(env_vars)
        container["env"] = [
            *(e for e in container.get("env") or [] if e.get("name") not in env_vars),
            *({"name": k, "value": v} for k, v in env_vars.items()),
        ]
        container["volumeMounts"] = [*container.get("volumeMounts", []), cache_mount, engine_mount]
    pod["volumes"] = [
        *pod.get("volumes", []),
        {
            "name": CACHE_VOLUME,
            "persistentVolumeClaim": {"claimName": mw.spec.cache.claim_name, "readOnly": True},
        },
        {"name": ENGINE_VOLUME, "emptyDir": {}},
    ]
    restore = {
        "name": RESTORE_CONTAINER,
        "image": runtime_image,
        "command": ["modelwarmup"],
        "args": [
            "restore",
            "--entry",
            f"{mount}/{key}",
            "--to",
            rehearsal.engine_cache_path,
            "--warn-only",
        ],
        "volumeMounts": [cache_mount, engine_mount],
        "securityContext": restricted(),
    }
    pod["initContainers"] = [restore, *pod.get("initContainers", [])]
    annotations = new.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[wiring.ANNOTATION_MODEL_KEY] = key
    annotations[ANNOTATION_ADDED_ENV] = ",".join(added)
    return new


def fully_unwired(template: KubeObject) -> KubeObject:
    """The pod template without either wiring of ours, the builtin one (:mod:`.serving`) or the
    rehearsal's: a resource can switch from one to the other, and be deleted after either. Each
    is removed only where its own parts are found, so a template wired by neither is unchanged."""
    pod = template.get("spec", {})
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    annotations = template.get("metadata", {}).get("annotations") or {}
    new = template
    if ENGINE_VOLUME in volumes or ANNOTATION_ADDED_ENV in annotations:
        new = unwired_template(new)
    if RUNTIME_VOLUME in volumes:
        new = builtin_unwired(new)
    return copy.deepcopy(new) if new is template else new


def unwired_template(template: KubeObject) -> KubeObject:
    """The pod template with everything rehearsal wiring added removed."""
    new = copy.deepcopy(template)
    metadata = new.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    added = set(filter(None, str(annotations.pop(ANNOTATION_ADDED_ENV, "")).split(",")))
    pod = new.get("spec", {})
    for field, names in (
        ("volumes", (CACHE_VOLUME, ENGINE_VOLUME)),
        ("initContainers", (RESTORE_CONTAINER,)),
    ):
        if field in pod:
            pod[field] = [i for i in pod[field] if i.get("name") not in names]
            if not pod[field]:
                del pod[field]
    for container in pod.get("containers") or []:
        if "volumeMounts" in container:
            container["volumeMounts"] = [
                m for m in container["volumeMounts"] if m.get("name") not in (CACHE_VOLUME, ENGINE_VOLUME)
            ]
            if not container["volumeMounts"]:
                del container["volumeMounts"]
        if "env" in container and added:
            container["env"] = [e for e in container["env"] if e.get("name") not in added]
            if not container["env"]:
                del container["env"]
    annotations.pop(wiring.ANNOTATION_MODEL_KEY, None)
    if "annotations" in metadata and not annotations:
        del metadata["annotations"]
    return new
