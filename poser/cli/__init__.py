"""The `poser` command line: parses options and calls library functions, nothing more.
One module per command group; the shared options are declared once in `options`."""

import sys

from poser.cli import annotate, data, evaluate, tools, train  # noqa: F401  (each registers its commands)
from poser.cli.options import app

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="poser")


if __name__ == "__main__":
    sys.exit(main())
