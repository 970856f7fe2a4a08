"""poser: DeepPose human pose estimation, from data to annotated video.

    import cv2, poser
    model = poser.load()                        # the shipped model (or a weights file)
    poses = model(cv2.imread("photo.jpg"))      # -> poser.Poses

    poser.export("w.safetensors", "w.onnx", format="onnx")

`load`, `export`, `PoseModel` and `Poses` are imported on first use, so `import poser` (and the CLI)
stays light.
"""

from poser.version import __version__

__all__ = ["load", "export", "PoseModel", "Poses", "__version__"]


def __getattr__(name: str):
    if name in ("load", "PoseModel"):
        from poser import api

        return getattr(api, name)
    if name == "export":
        from poser.exporter import export

        return export
    if name == "Poses":
        from poser.inference.poses import Poses

        return Poses
    raise AttributeError(f"module 'poser' has no attribute {name!r}")
