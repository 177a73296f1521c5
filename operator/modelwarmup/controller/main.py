"""Run the operator: `modelwarmup operator` (or `kopf run -m modelwarmup.controller.kopf_entry`)."""

from __future__ import annotations

import argparse
import os
import random

import kopf

from modelwarmup.controller import credentials, handlers
from modelwarmup.controller.settings import OperatorSettings


def run_operator(settings: OperatorSettings, *, registry: kopf.OperatorRegistry | None = None) -> None:
    """Run until stopped (SIGTERM/SIGINT); :class:`KubeCredentialsError` at once if there are no credentials."""
    credentials.load(settings.credentials_source())  # fail with our message before kopf's retries
    registry = registry or kopf.OperatorRegistry()
    handlers.register(registry, settings)
    # kopf configures the root logger; our loggers follow it.
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    kopf.run(
        registry=registry,
        standalone=not settings.peering,
        peering_name=settings.peering_name if settings.peering else None,
        # Peers of equal priority all pause: each replica draws its own unless one is given.
        priority=settings.peering_priority
        if settings.peering_priority is not None
        else random.randrange(1, 2**31),
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.liveness_port}/healthz"
        if settings.liveness_port
        else None,
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("operator", help="run the ModelWarmup operator (kopf)")
    parser.add_argument(
        "--namespace", action="append", default=None, help="watch this namespace (repeatable); all by default"
    )
    parser.add_argument(
        "--kubeconfig",
        default=None,
        help="kubeconfig file; $KUBECONFIG, then the pod's ServiceAccount, then ~/.kube/config by default",
    )
    parser.add_argument("--context", default=None, help="the kubeconfig context; its current one by default")
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    settings = OperatorSettings.from_env(os.environ)
    overrides: dict[str, object] = {}
    if args.namespace:
        overrides["namespaces"] = tuple(args.namespace)
    if args.kubeconfig:
        overrides["kubeconfig"] = args.kubeconfig
    if args.context:
        overrides["kube_context"] = args.context
    run_operator(settings.model_copy(update=overrides))
    return 0
