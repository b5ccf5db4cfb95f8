"""Evaluation harness: accuracy (DSC, NSD with the FLARE rules) and efficiency (time, GPU memory, CPU, RAM).

``python -m abdoseg evaluate|efficiency --help``. Imports numpy, scipy and SimpleITK only;
matplotlib, psutil and nvidia-ml-py load inside the functions that use them. No torch.
"""
