"""`poser bench`: throughput on this machine next to what limits it."""

# The sections, in the order they run (their code: sections.py, which checks it holds each).
SECTIONS = ("data", "train", "annotate", "detect", "threads", "runtime")
