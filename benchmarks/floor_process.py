"""The floor of a cold run on this machine: a fresh process that does what the pipeline does around the model and
nothing else — the same interpreter settings and imports (numpy, SimpleITK, OpenVINO, the app), the scan read as the
pipeline reads it (SimpleITK header, ISA-L inflate) and a label map of zeros written on its grid as the pipeline
writes it — with no model, no preprocessing and no post-processing. bench_pipeline.py times it beside each cold run:
cold e2e - floor - steady forward is what the model's own work costs beyond its steady forward.

    python benchmarks/floor_process.py SCAN OUT.nii.gz
"""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from abdoseg.inference.process.environment import set_process_environment  # noqa: E402

set_process_environment()  # as python -m abdoseg predict, before numpy loads

import numpy as np  # noqa: E402

from abdoseg.inference.graph.runtime import import_openvino  # noqa: E402
from abdoseg.inference.grid.scan import Grid  # noqa: E402
from abdoseg.inference.io.read import read_array, read_header  # noqa: E402
from abdoseg.inference.io.write import write_labels_atomic  # noqa: E402


def main() -> None:
    scan, out = Path(sys.argv[1]), Path(sys.argv[2])
    import_openvino()
    reader = read_header(scan)
    voxels = read_array(reader)
    write_labels_atomic(np.zeros(voxels.shape, np.uint8), Grid.of(reader), out)
    sys.stdout.flush()
    os._exit(0)  # as python -m abdoseg predict: no interpreter teardown


if __name__ == "__main__":
    main()
