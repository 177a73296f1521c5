"""A serving pod's API object, for a pod a test ran itself: the ReplicaSet controller's part (a
Pod from the Deployment's template) and the kubelet's (its status, its containers' logs).

The emulated API server has no controllers and no nodes. Tests that start a serving pod on this
host (:mod:`tests.e2e.serving`, :mod:`tests.rehearsal.pods`) publish it with :func:`publish` once
it served, so the operator finds it as on a cluster: by the Deployment's selector, with the pod
template's labels and annotations, its containers started and ready, and ``pods/log`` serving what
the processes really wrote (:meth:`tests.k8s.emulator.ApiServer.attach_log`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .client import PODS, KubeClient
from .emulator import ApiServer
from .kubelet import image_id, now_rfc3339


def publish(
    server: ApiServer,
    client: KubeClient,
    deployment: Mapping[str, Any],
    *,
    name: str,
    logs: Mapping[str, str],
    folder: Path,
    image_ids: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Create the Pod (ready, its init containers done) and serve ``logs`` (container -> text),
    kept as files in ``folder`` as a node keeps them. ``image_ids`` (container -> imageID) stand
    for a node that pulled another image for the same reference (a tag that moved)."""
    meta, template = deployment["metadata"], deployment["spec"]["template"]
    namespace = meta["namespace"]
    pod_meta = copy.deepcopy(template.get("metadata") or {})
    # No ownerReference: there is no ReplicaSet here, and the garbage collector would delete a pod
    # whose owner does not exist.
    pod_meta["name"] = name
    pod = client.create(
        PODS, {"metadata": pod_meta, "spec": copy.deepcopy(template["spec"])}, namespace=namespace
    )
    folder.mkdir(parents=True, exist_ok=True)
    for container, text in logs.items():
        (folder / container).write_text(text)
        server.attach_log(namespace, name, container, folder / container)
    at = now_rfc3339()
    inits = [
        {"name": c["name"], "ready": True, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        for c in template["spec"].get("initContainers") or []
    ]
    running = [
        {"name": c["name"], "ready": True, "started": True, "image": c.get("image", ""),
         "imageID": (image_ids or {}).get(c["name"]) or image_id(c.get("image", "")),
         "state": {"running": {"startedAt": at}}}
        for c in template["spec"]["containers"]
    ]  # fmt: skip
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}],
        "initContainerStatuses": inits,
        "containerStatuses": running,
    }
    result: dict[str, Any] = client.patch_status(PODS, pod["metadata"]["name"], status, namespace=namespace)
    return result
