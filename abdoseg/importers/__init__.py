"""Importers: other frameworks' trained model folders made into cards and ONNX files this pipeline runs.

They need the framework that trained the model (torch, nnunetv2: the [nnunet] extra); abdoseg.inference never
imports them, so the runtime stays without torch.
"""
