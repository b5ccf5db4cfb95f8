"""nnU-Net v2 models imported as ONNX (abdoseg import-nnunet) run without torch: the card, nnU-Net's preprocessing,
sliding windows over the folds, and the export back onto the scan's grid (docs/nnunet.md)."""
