"""Where datasets come from: downloads (resumable, verified) and LSP / COCO imports."""
