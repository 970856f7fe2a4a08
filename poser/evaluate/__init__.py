"""Evaluation: PCP, PDJ and COCO keypoint AP of a model or of saved predictions."""
