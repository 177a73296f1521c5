"""How a client reaches the emulated API server, as it would a real one: HTTPS and a bearer token.

A real kube-apiserver serves only TLS and answers 401 to a request without valid credentials, so
the emulator does too (a fresh CA and token per server, from ``trustme``). Everything that talks to
it goes through the same three facts, and the operator gets them the way users give them: a
kubeconfig file.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import ssl
from pathlib import Path
from typing import Any

import trustme
import yaml


@dataclasses.dataclass(frozen=True)
class Access:
    """A server's URL, the PEM of the CA that signed its certificate, and a token it accepts."""

    url: str
    ca_pem: bytes
    token: str

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this server's CA (and only it), hostname checked."""
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def kubeconfig(
        self,
        *,
        namespace: str = "default",
        token: str | None = None,
        user: dict[str, Any] | None = None,
        ca_pem: bytes | None = None,
    ) -> dict[str, Any]:
        """A kubeconfig as ``kubectl config view --raw`` shows one: CA data inline, a token user.

        ``user`` replaces the token user (a client certificate, or nothing at all); ``ca_pem``
        the server's CA (to see a client refuse a server it cannot verify).
        """
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "emulator",
            "clusters": [
                {
                    "name": "emulator",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(ca_pem or self.ca_pem).decode(),
                    },
                }
            ],
            "users": [
                {"name": "operator", "user": user if user is not None else {"token": token or self.token}}
            ],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "operator", "namespace": namespace},
                }
            ],
        }

    def write_kubeconfig(self, path: Path, **kwargs: Any) -> Path:
        path.write_text(yaml.safe_dump(self.kubeconfig(**kwargs)), encoding="utf-8")
        path.chmod(0o600)
        return path


@dataclasses.dataclass(frozen=True)
class ServerIdentity:
    """What the server side holds: its TLS context and the token it accepts."""

    ca: trustme.CA
    server_context: ssl.SSLContext
    token: str

    @classmethod
    def create(cls, host: str = "127.0.0.1") -> ServerIdentity:
        ca = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(host, "localhost").configure_cert(context)
        # Client certificates signed by the same CA authenticate too, as with --client-ca-file.
        context.verify_mode = ssl.CERT_OPTIONAL
        ca.configure_trust(context)
        return cls(ca=ca, server_context=context, token=secrets.token_urlsafe(24))

    def client_certificate_user(self, common_name: str) -> dict[str, str]:
        """A kubeconfig user that authenticates with a client certificate for ``common_name``."""
        leaf = self.ca.issue_cert(f"{common_name}.users.test", common_name=common_name)
        return {
            "client-certificate-data": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
            "client-key-data": base64.b64encode(leaf.private_key_pem.bytes()).decode(),
        }

    def access(self, url: str) -> Access:
        return Access(url=url, ca_pem=self.ca.cert_pem.bytes(), token=self.token)
