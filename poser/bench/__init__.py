"""`poser bench`: throughput on this machine next to what limits it."""
