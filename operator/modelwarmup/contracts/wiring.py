"""The names by which the operator, warm-up Jobs and serving pods find each other.

The operator sets them on what it creates or patches; the worker and the serving runtime read
them. Each is spelled here once.

Two words name cache keys, one meaning each: the *model key* (``<repo-slug>-<digest>``: the model,
its commits and its compile settings, the same on every platform) and the *entry key*
(``<model-key>/<platform-key>``: one platform's entry under ``compiled/``).
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "modelwarmup.dev"

# Labels and annotations the operator puts on Jobs and Deployments.
MANAGED_BY: Final = "app.kubernetes.io/managed-by"
OPERATOR: Final = "modelwarmup"
LABEL_RESOURCE: Final = f"{GROUP}/modelwarmup"
LABEL_TARGET: Final = f"{GROUP}/target"
LABEL_WARMUP_KEY: Final = f"{GROUP}/warmup-key"
LABEL_ROLE: Final = f"{GROUP}/role"  # on the Job resolving branches and tags: "resolve"
ROLE_RESOLVE: Final = "resolve"
ANNOTATION_MODEL_KEY: Final = f"{GROUP}/model-key"  # on the pod template: its change rolls pods out
ANNOTATION_WIRED_BY: Final = f"{GROUP}/wired-by"
# On a ModelWarmup, set by its user: a new value asks for a fresh resolution of its branches and
# tags (as Flux's reconcile.fluxcd.io/requestedAt). Not under "modelwarmup.dev/": kopf keeps its
# own state there and leaves those annotations out of what it diffs.
ANNOTATION_REFRESH: Final = f"refresh.{GROUP}/requested-at"

# The serving container's environment (set by the operator's patch, read by the runtime loader).
ENV_AUTOLOAD: Final = "MODELWARMUP_AUTOLOAD"
ENV_CACHE_DIR: Final = "MODELWARMUP_CACHE_DIR"
ENV_MODEL_KEY: Final = "MODELWARMUP_MODEL_KEY"  # the model key (every platform's entries)
# Set by the runtime itself, inherited by child processes.
ENV_ACTIVATED: Final = "MODELWARMUP_ACTIVATED"
ENV_ACTIVATING: Final = "MODELWARMUP_ACTIVATING"
ENV_COLD: Final = "MODELWARMUP_COLD"

# Mount paths.
JOB_CACHE_MOUNT: Final = "/cache"  # the cache volume in warm-up Jobs
SERVING_CACHE_MOUNT: Final = "/var/cache/modelwarmup"  # spec.serving.mountPath's default
RUNTIME_MOUNT: Final = "/opt/modelwarmup"  # the loader's emptyDir in serving pods
# Where a rehearsed server writes its compile caches, and serving pods restore them (an emptyDir).
ENGINE_CACHE_MOUNT: Final = "/var/cache/modelwarmup-engine"
TERMINATION_LOG: Final = "/dev/termination-log"  # where the worker writes its summary
