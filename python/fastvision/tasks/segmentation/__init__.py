"""Semantic segmentation application code (HRNetV2, BiSeNet V2 and HyperSeg share one recipe):
the training recipe, the mIoU experiment, the model benchmark and the demo section."""
