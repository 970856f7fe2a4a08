"""Training: the loop, its losses, cascade stages and multi-process launch."""
