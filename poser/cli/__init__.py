"""The `poser` command line: parses options and calls library functions, nothing more.
One module per command group; the shared options are declared once in `options`.

`train`'s options list the backbone, head and loss registries, which live beside their torch
modules; importing it costs ~1.5 s of torch. So `main` registers it only when the command line
may need it (train itself, `--help`, anything not another command): `poser annotate` on an
exported runtime starts without torch. `poser.cli.app` (for Python callers and tests) always
holds every command.
"""

import sys

from poser.cli import annotate, data, evaluate, options, tools  # noqa: F401  (each registers its commands)

__all__ = ["app", "main"]


def _with_train():
    from poser.cli import train  # noqa: F401  (registers `train`)

    return options.app


def __getattr__(name: str):
    if name == "app":
        return _with_train()
    raise AttributeError(f"module 'poser.cli' has no attribute {name!r}")


def main() -> None:
    args = sys.argv[1:2]
    others = {c.name or c.callback.__name__.replace("_", "-") for c in options.app.registered_commands}
    app = options.app if args and args[0] in others else _with_train()
    app(prog_name="poser")


if __name__ == "__main__":
    sys.exit(main())
