"""`poser annotate`: skeletons on images, folders and videos, and one keypoint JSON."""
