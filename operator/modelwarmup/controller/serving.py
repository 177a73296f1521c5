"""Wire a serving Deployment to the warmed cache, or unwire it (pure: manifests in, patch out).

What is added, each under a name of ours so it can be found and removed again:
the cache claim as a read-only volume, its mount and the environment in the chosen containers
(``HF_HOME``, ``HF_HUB_OFFLINE=1``, the runtime loader's switch, key and ``PYTHONPATH``), an
emptyDir holding the loader, an init container that verifies the cache for the node and installs
the loader there, and the ``modelwarmup.dev/model-key`` annotation on the pod template. The patch
is a JSON patch guarded by a ``test`` of the resourceVersion, so a concurrent edit by someone else
makes it fail (and the next reconcile recomputes it) instead of being overwritten; it works the
same on every API server, unlike a strategic merge.
"""

from __future__ import annotations

import copy

from modelwarmup.api.resource import ModelWarmup
from modelwarmup.contracts import wiring
from modelwarmup.controller.kubeapi import KubeObject

CACHE_VOLUME = "modelwarmup-cache"
RUNTIME_VOLUME = "modelwarmup-runtime"
INIT_CONTAINER = "modelwarmup-verify"
OUR_ENV = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    wiring.ENV_CACHE_DIR,
    wiring.ENV_MODEL_KEY,
    wiring.ENV_AUTOLOAD,
)


def _without(items: list[KubeObject], names: tuple[str, ...] | str) -> list[KubeObject]:
    names = (names,) if isinstance(names, str) else names
    return [i for i in items if i.get("name") not in names]


def _filter(parent: KubeObject, field: str, names: tuple[str, ...]) -> None:
    """Drop our named items from ``parent[field]``, and the list itself once nothing is left."""
    if field not in parent:
        return
    parent[field] = _without(parent[field], names)
    if not parent[field]:
        del parent[field]  # the template as it was before we added to it


def restricted() -> KubeObject:
    """The restricted Pod Security profile for a container of ours."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _strip_pythonpath(value: str) -> str:
    parts = [p for p in value.split(":") if p and not p.startswith(wiring.RUNTIME_MOUNT)]
    return ":".join(parts)


def _verify_args(mount: str, model_key: str, repo: str) -> list[str]:
    return [
        "verify",
        "--cache-dir", mount,
        "--model-key", model_key,
        "--model-path", repo,
        "--warn-only",
        "--install-runtime", f"{wiring.RUNTIME_MOUNT}/python",
    ]  # fmt: skip


def wired_template(template: KubeObject, mw: ModelWarmup, model_key: str, runtime_image: str) -> KubeObject:
    """The pod template with our wiring for ``model_key`` (any older wiring replaced)."""
    serving = mw.spec.serving
    assert serving is not None
    mount = serving.mount_path
    new = unwired_template(template)
    pod = new.setdefault("spec", {})
    pod["volumes"] = [
        *pod.get("volumes", []),
        {
            "name": CACHE_VOLUME,
            "persistentVolumeClaim": {"claimName": mw.spec.cache.claim_name, "readOnly": True},
        },
        {"name": RUNTIME_VOLUME, "emptyDir": {}},
    ]
    cache_mount = {"name": CACHE_VOLUME, "mountPath": mount, "readOnly": True}
    if mw.spec.cache.sub_path:
        cache_mount["subPath"] = mw.spec.cache.sub_path
    runtime_mount = {"name": RUNTIME_VOLUME, "mountPath": wiring.RUNTIME_MOUNT, "readOnly": True}
    for container in pod.get("containers", []):
        if serving.containers and container.get("name") not in serving.containers:
            continue
        env = container.get("env", [])
        pythonpath = next((e.get("value", "") for e in env if e.get("name") == "PYTHONPATH"), "")
        container["env"] = [
            *_without(env, (*OUR_ENV, "PYTHONPATH")),
            {"name": "HF_HOME", "value": f"{mount}/hf"},
            {"name": "HF_HUB_OFFLINE", "value": "1"},
            {"name": wiring.ENV_CACHE_DIR, "value": mount},
            {"name": wiring.ENV_MODEL_KEY, "value": model_key},
            {"name": wiring.ENV_AUTOLOAD, "value": "1"},
            {
                "name": "PYTHONPATH",
                "value": ":".join(filter(None, [f"{wiring.RUNTIME_MOUNT}/python", pythonpath])),
            },
        ]
        container["volumeMounts"] = [*container.get("volumeMounts", []), cache_mount, runtime_mount]
    if serving.verify_init_container:
        verify = {
            "name": INIT_CONTAINER,
            "image": runtime_image,
            "command": ["modelwarmup"],
            "args": _verify_args(mount, model_key, mw.spec.model.repo),
            "volumeMounts": [cache_mount, {**runtime_mount, "readOnly": False}],
            "securityContext": restricted(),
        }
        pod["initContainers"] = [verify, *pod.get("initContainers", [])]
    annotations = new.setdefault("metadata", {}).setdefault("annotations", {})
    annotations[wiring.ANNOTATION_MODEL_KEY] = model_key
    return new


def unwired_template(template: KubeObject) -> KubeObject:
    """The pod template with everything of ours removed."""
    new = copy.deepcopy(template)
    pod = new.setdefault("spec", {})
    _filter(pod, "volumes", (CACHE_VOLUME, RUNTIME_VOLUME))
    _filter(pod, "initContainers", (INIT_CONTAINER,))
    for container in pod.get("containers", []):
        _filter(container, "volumeMounts", (CACHE_VOLUME, RUNTIME_VOLUME))
        if "env" in container:
            for var in container["env"]:
                if var.get("name") == "PYTHONPATH" and wiring.RUNTIME_MOUNT in var.get("value", ""):
                    var["value"] = _strip_pythonpath(var["value"])
            empty_path = [
                e["name"] for e in container["env"] if e.get("name") == "PYTHONPATH" and not e.get("value")
            ]
            _filter(container, "env", (*OUR_ENV, *empty_path))
    metadata = new.get("metadata", {})
    annotations = metadata.get("annotations", {})
    annotations.pop(wiring.ANNOTATION_MODEL_KEY, None)
    if "annotations" in metadata and not annotations:
        del metadata["annotations"]  # the template as it was before we added ours
    return new


def current_key(deployment: KubeObject) -> str | None:
    """The cache key a Deployment's pods are wired to, if any."""
    annotations = deployment.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    key = annotations.get(wiring.ANNOTATION_MODEL_KEY)
    return str(key) if key else None


def wired_by(deployment: KubeObject) -> str | None:
    annotations = deployment.get("metadata", {}).get("annotations") or {}
    owner = annotations.get(wiring.ANNOTATION_WIRED_BY)
    return str(owner) if owner else None


def json_patch(deployment: KubeObject, template: KubeObject, *, owner: str | None) -> list[KubeObject]:
    """A JSON patch replacing the pod template, guarded by the resourceVersion it was computed from."""
    patch: list[KubeObject] = []
    version = deployment.get("metadata", {}).get("resourceVersion")
    if version:
        patch.append({"op": "test", "path": "/metadata/resourceVersion", "value": version})
    patch.append({"op": "replace", "path": "/spec/template", "value": template})
    annotations = deployment.get("metadata", {}).get("annotations")
    escaped = wiring.ANNOTATION_WIRED_BY.replace("~", "~0").replace("/", "~1")
    if owner is None:
        if annotations and wiring.ANNOTATION_WIRED_BY in annotations:
            patch.append({"op": "remove", "path": f"/metadata/annotations/{escaped}"})
    elif annotations is None:
        patch.append(
            {"op": "add", "path": "/metadata/annotations", "value": {wiring.ANNOTATION_WIRED_BY: owner}}
        )
    else:
        patch.append({"op": "add", "path": f"/metadata/annotations/{escaped}", "value": owner})
    return patch
