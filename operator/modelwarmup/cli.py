"""The `modelwarmup` command: one entry point, a subcommand per role.

Each role's module contributes its own subcommand through a ``register`` function, so this
module only assembles them and turns modelwarmup's errors into exit codes and one-line messages.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from modelwarmup import __version__, crdgen, errors, manifests

Handler = Callable[[argparse.Namespace], int]


def _crd(_: argparse.Namespace) -> int:
    sys.stdout.write(crdgen.render_crd())
    return errors.EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    """Every file, each document: one line per valid resource or problem; a file that cannot be
    read, or that holds no ModelWarmup, is a problem too, and the other files are still checked."""
    failed = False
    for path in args.files:
        found = 0
        try:
            for body in manifests.load_documents(path):
                if not manifests.is_modelwarmup(body):
                    continue
                found += 1
                resource = manifests.validate_body(body, strict=True)
                print(f"{path}: {resource.metadata.name}: valid")
        except errors.InvalidSpecError as error:
            failed = True
            for problem in error.problems:
                print(f"{path}: {problem}", file=sys.stderr)
            continue
        if not found:
            failed = True
            print(f"{path}: no ModelWarmup in it (kind: {manifests.KIND})", file=sys.stderr)
    return errors.EXIT_PERMANENT if failed else errors.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelwarmup",
        description="Download and pre-compile Hugging Face models once; start serving pods warm.",
    )
    parser.add_argument("--version", action="version", version=f"modelwarmup {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    crd = commands.add_parser("crd", help="print the ModelWarmup CustomResourceDefinition")
    crd.set_defaults(handler=_crd)

    validate = commands.add_parser("validate", help="validate ModelWarmup manifests as the operator would")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.set_defaults(handler=_validate)

    for register in _registrars():
        register(commands)
    return parser


def _registrars() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    """Subcommands of the other roles; each module registers its own."""
    from modelwarmup.cache import prune
    from modelwarmup.controller import main as operator_main
    from modelwarmup.rehearsal import command as rehearsal_command
    from modelwarmup.runtime import verify
    from modelwarmup.worker import command as worker_command
    from modelwarmup.worker import rehearse

    return [
        worker_command.register,
        rehearse.register,
        rehearsal_command.register_restore,
        verify.register,
        prune.register,
        operator_main.register,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except errors.ModelWarmupError as error:
        print(
            f"modelwarmup {args.command}: {error.reason}: {errors.redact_credentials(str(error))}",
            file=sys.stderr,
        )
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
