"""The `poser` command line."""

from poser.cli.app import app, main

__all__ = ["app", "main"]
