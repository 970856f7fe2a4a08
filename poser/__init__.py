"""poser: DeepPose human pose estimation, from data to annotated video."""

__version__ = "0.2.0"
