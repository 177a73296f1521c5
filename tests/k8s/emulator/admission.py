"""GAP-ADMIT: built-in objects are validated as kube-apiserver validates them, at least for what
the operator writes (Jobs, Deployments, PersistentVolumeClaims, Events).

Two layers, as on a real server: the OpenAPI schema of the kind (``kubernetes-validate``'s copy
of Kubernetes' own, strict: unknown fields are refused), then the rules that the schema cannot
state and apimachinery's validation code checks: names, label keys and values, quantities,
unique volume names and mount paths, mounts naming a volume, toleration rules. A refusal is a 422
``Invalid`` whose ``details.causes`` name each field, as the real server sends it. What stays
unchecked is listed in the package docstring (GAP-ADMIT).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import kmock
import kubernetes_validate

from .common import k8s_error

K8S_VERSION = "1.31"
ADMITTED = frozenset({"jobs", "deployments", "persistentvolumeclaims", "events"})

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUANTITY = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

Cause = tuple[str, str, str]  # (reason, field, message)


def check(res: kmock.resource, body: Mapping[str, Any]) -> None:
    """Raise the API server's 422 for an invalid built-in object; return for a valid one."""
    if res.group not in ("", "apps", "batch") or res.plural not in ADMITTED:
        return
    causes = list(_schema_causes(body)) or list(_rule_causes(res, body))
    if not causes:
        return
    kind, name = body.get("kind", res.plural), (body.get("metadata") or {}).get("name", "")
    group = f".{res.group}" if res.group else ""
    details = "; ".join(f"{field}: {message}" for _, field, message in causes)
    raise k8s_error(
        422,
        "Invalid",
        f'{kind}{group} "{name}" is invalid: {details}',
        name=name,
        group=res.group,
        kind=kind,
        causes=[{"reason": reason, "field": field, "message": message} for reason, field, message in causes],
    )


def _schema_causes(body: Mapping[str, Any]) -> Iterator[Cause]:
    try:
        kubernetes_validate.validate(dict(body), K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        field = ".".join(str(p) for p in error.path) or "<root>"
        yield "FieldValueInvalid", field, f"Invalid value: {error.message}"


def _rule_causes(res: kmock.resource, body: Mapping[str, Any]) -> Iterator[Cause]:
    meta = body.get("metadata") or {}
    name = str(meta.get("name") or "")
    if len(name) > 253 or not _SUBDOMAIN.match(name):
        yield "FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 subdomain'
    yield from _labels("metadata.labels", meta.get("labels") or {})
    spec = body.get("spec") or {}
    if res.plural in ("jobs", "deployments"):
        template = spec.get("template") or {}
        yield from _labels(
            "spec.template.metadata.labels", (template.get("metadata") or {}).get("labels") or {}
        )
        yield from _pod_spec("spec.template.spec", template.get("spec") or {})
    if res.plural == "jobs" and len(name) > 63:
        # The Job controller labels its pods with job-name, a label value.
        yield (
            "FieldValueInvalid",
            "metadata.name",
            f'Invalid value: "{name}": must be no more than 63 characters',
        )
    if res.plural == "persistentvolumeclaims":
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if storage is None:
            yield "FieldValueRequired", "spec.resources.requests[storage]", "Required value"
        else:
            yield from _quantity("spec.resources.requests[storage]", storage)


def _labels(where: str, labels: Mapping[str, Any]) -> Iterator[Cause]:
    for key, value in labels.items():
        prefix, _, label = str(key).rpartition("/")
        if (
            (prefix and (len(prefix) > 253 or not _SUBDOMAIN.match(prefix)))
            or len(label) > 63
            or not (_LABEL_NAME.match(label))
        ):
            yield "FieldValueInvalid", f"{where}", f'Invalid value: "{key}": a qualified name'
        if len(str(value)) > 63 or not _LABEL_VALUE.match(str(value)):
            yield (
                "FieldValueInvalid",
                f"{where}",
                f'Invalid value: "{value}": a valid label must be an empty '
                + (
                    "string or consist of alphanumeric characters, '-', '_' or '.', and start and end with one, "
                    "at most 63 characters"
                ),
            )


def _pod_spec(where: str, pod: Mapping[str, Any]) -> Iterator[Cause]:
    volumes = [v.get("name") for v in pod.get("volumes") or []]
    for index, volume in enumerate(volumes):
        if volume in volumes[:index]:
            yield "FieldValueDuplicate", f"{where}.volumes[{index}].name", f'Duplicate value: "{volume}"'
    for group in ("initContainers", "containers"):
        for c_index, container in enumerate(pod.get(group) or []):
            path = f"{where}.{group}[{c_index}]"
            paths: list[str] = []
            for m_index, mount in enumerate(container.get("volumeMounts") or []):
                if mount.get("name") not in volumes:
                    yield (
                        "FieldValueNotFound",
                        f"{path}.volumeMounts[{m_index}].name",
                        (f'Not found: "{mount.get("name")}"'),
                    )
                if mount.get("mountPath") in paths:
                    yield (
                        "FieldValueInvalid",
                        f"{path}.volumeMounts[{m_index}].mountPath",
                        (f'Invalid value: "{mount.get("mountPath")}": must be unique'),
                    )
                paths.append(mount.get("mountPath"))
            resources = container.get("resources") or {}
            for kind in ("limits", "requests"):
                for resource, value in (resources.get(kind) or {}).items():
                    yield from _quantity(f"{path}.resources.{kind}[{resource}]", value)
    for t_index, toleration in enumerate(pod.get("tolerations") or []):
        if toleration.get("operator") == "Exists" and toleration.get("value"):
            yield (
                "FieldValueInvalid",
                f"{where}.tolerations[{t_index}].operator",
                ("Invalid value: value must be empty when `operator` is 'Exists'"),
            )
        if toleration.get("tolerationSeconds") is not None and toleration.get("effect") != "NoExecute":
            yield (
                "FieldValueInvalid",
                f"{where}.tolerations[{t_index}].effect",
                ("Invalid value: effect must be 'NoExecute' when `tolerationSeconds` is set"),
            )


def _quantity(where: str, value: Any) -> Iterator[Cause]:
    text = str(value)
    if not _QUANTITY.match(text):
        yield "FieldValueInvalid", where, f'Invalid value: "{text}": must match the regex of a quantity'
    elif text.startswith("-"):
        yield "FieldValueInvalid", where, f'Invalid value: "{text}": must be greater than or equal to 0'
