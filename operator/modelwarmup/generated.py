"""Write, or check, every file generated from the API models.

``python -m modelwarmup.generated`` writes them; ``--check`` fails (exit 1) when a checked-in
file differs from what the models generate, so a model change cannot land without its CRD.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

from modelwarmup import apidocs, crdgen
from modelwarmup.worker import options

GENERATED: dict[str, Callable[[], str]] = {
    "crds/modelwarmups.modelwarmup.dev.yaml": crdgen.render_crd,
    "charts/modelwarmup/files/modelwarmups.modelwarmup.dev.yaml": crdgen.render_crd,
    "docs/api.md": apidocs.render_api_docs,
    "docs/cli.md": options.render_cli_docs,
}


def stale_files(root: Path) -> dict[str, str]:
    """Each generated file whose checked-in text differs, with a unified diff."""
    stale = {}
    for relative, render in GENERATED.items():
        path = root / relative
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        wanted = render()
        if current != wanted:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True), wanted.splitlines(keepends=True), relative, "generated"
            )
            stale[relative] = "".join(diff)
    return stale


def write_all(root: Path) -> None:
    for relative, render in GENERATED.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when a generated file is stale")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args()
    if not args.check:
        write_all(args.root)
        return 0
    stale = stale_files(args.root)
    for relative, diff in stale.items():
        print(f"{relative} is stale; run `make generate`\n{diff}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
