"""`poser bench`: throughput on this machine next to what limits it."""

# The sections, in the order they run (their code: sections.py and inference.py; tests/test_cli.py checks they agree).
SECTIONS = ("data", "train", "annotate", "detect", "threads", "runtime")
