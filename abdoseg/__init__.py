"""abdoseg: fast, CPU-first abdominal CT organ segmentation (FLARE21 and FLARE22 label sets).

    inference/   scans in, label maps out: the pipeline, its model cards, readers and writers (no torch)
    networks/    the torch definitions of every network (training, and the fine stage's torch path)
    training/    training, export to ONNX + card, INT8 quantisation (torch)
    evaluation/  scoring (DSC, NSD with the FLARE rules) and the organisers' efficiency measure
    weights/     the shipped weights, each beside its model card (weights/README.md)

One command, `abdoseg` (abdoseg.command; also `python -m abdoseg`). Imports point one way: training and evaluation
may import inference, inference imports neither. Import-light: nothing heavy loads until a subcommand runs.
"""
