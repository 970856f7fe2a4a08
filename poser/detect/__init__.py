"""Person boxes: torchvision COCO detectors and the --boxes file reader."""
