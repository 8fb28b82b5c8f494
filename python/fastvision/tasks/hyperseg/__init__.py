"""HyperSeg application code beyond the shared segmentation recipe: the patch-op benchmark and
the demo section."""
