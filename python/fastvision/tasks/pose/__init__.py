"""HRNet pose application code: the training recipe and the COCO OKS AP experiment."""
