"""Inference: a weights file + an image -> Poses (crops, the model's forward, the head's decode, back to pixels)."""
