"""Where the operator's Kubernetes credentials come from, for kopf and for our own client alike.

The official client's loaders do the work (in-cluster ServiceAccount with token rotation,
kubeconfig with tokens, client certificates, exec plugins, CA data in temporary files); this
module picks the source the way kubectl does, then hands the same credentials to kopf's login
and to :class:`~modelwarmup.controller.kubeapi.KubeApi`. It never weakens them: TLS is verified
unless the kubeconfig itself says ``insecure-skip-tls-verify``, and a configuration that would
send requests anonymously is refused instead of used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from modelwarmup import errors

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclasses.dataclass(frozen=True)
class Source:
    """Where to look: an explicit kubeconfig wins, then the pod's ServiceAccount, then ~/.kube/config."""

    kubeconfig: str | None = None  # a path, or several joined by ":" as in $KUBECONFIG
    context: str | None = None
    service_account_dir: Path = SERVICE_ACCOUNT_DIR
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)


def load(source: Source) -> Any:
    """A ``kubernetes.client.Configuration`` with credentials, or :class:`KubeCredentialsError`."""
    import kubernetes

    client: Any = kubernetes.client  # untyped: kept at arm's length
    config: Any = kubernetes.config
    configuration = client.Configuration()
    try:
        if source.kubeconfig is None and source.environ.get("KUBERNETES_SERVICE_HOST"):
            config.incluster_config.InClusterConfigLoader(
                token_filename=str(source.service_account_dir / "token"),
                cert_filename=str(source.service_account_dir / "ca.crt"),
                environ=source.environ,
            ).load_and_set(configuration)
        else:
            config.load_kube_config(
                config_file=source.kubeconfig,
                context=source.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (config.ConfigException, OSError) as error:
        where = source.kubeconfig or "in-cluster ServiceAccount or ~/.kube/config"
        raise errors.KubeCredentialsError(
            f"cannot load Kubernetes credentials from {where}: {error}"
        ) from None
    if not (_bearer(configuration)[1] or configuration.cert_file or configuration.username):
        raise errors.KubeCredentialsError(
            f"the Kubernetes credentials for {configuration.host} hold no token, client certificate or "
            "password; refusing to send anonymous requests"
        )
    return configuration


def _bearer(configuration: Any) -> tuple[str | None, str | None]:
    """(scheme, token) of the Authorization header the configuration sends, refreshed if due."""
    header = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
    if not header:
        return None, None
    scheme, _, token = header.partition(" ")
    return (scheme, token) if token else (None, scheme)


def connection_info(configuration: Any) -> kopf.ConnectionInfo:
    """The same credentials in kopf's terms."""
    scheme, token = _bearer(configuration)
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,  # only when the kubeconfig asks for it
        scheme=scheme.capitalize() if scheme else None,
        token=token,
        username=configuration.username or None,
        password=configuration.password or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


def register_login(registry: kopf.OperatorRegistry, source: Source) -> None:
    """kopf's login: re-run on every 401, so rotated ServiceAccount tokens are picked up."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        try:
            return connection_info(load(source))
        except errors.KubeCredentialsError as error:
            raise kopf.LoginError(str(error)) from None
