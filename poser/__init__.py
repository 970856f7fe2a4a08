"""poser: DeepPose human pose estimation, from data to annotated video.

    import cv2, poser
    model = poser.load()                        # the shipped model (or a weights file)
    poses = model(cv2.imread("photo.jpg"))      # -> poser.Poses

`load`, `PoseModel` and `Poses` are imported on first use, so `import poser` (and the CLI)
stays light.
"""

__version__ = "0.2.0"
__all__ = ["load", "PoseModel", "Poses", "__version__"]


def __getattr__(name: str):
    if name in ("load", "PoseModel"):
        from poser import api

        return getattr(api, name)
    if name == "Poses":
        from poser.inference.poses import Poses

        return Poses
    raise AttributeError(f"module 'poser' has no attribute {name!r}")
