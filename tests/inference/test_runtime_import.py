"""OpenVINO imported without its model converter (abdoseg.inference.graph.runtime.import_openvino)."""
from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_openvino_is_imported_without_its_converter_which_stays_importable():
    code = ("import sys; from abdoseg.inference.graph.runtime import import_openvino; ov = import_openvino(); "
            "print(ov.Core is not None, 'openvino.tools.ovc' in sys.modules, 'openvino_telemetry' in sys.modules); "
            "from openvino.tools.ovc import convert_model; print(callable(convert_model))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False", "True"]
