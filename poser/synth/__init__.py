"""Synthetic data: COCO-format figure datasets, test videos, and the demo that runs on them."""
