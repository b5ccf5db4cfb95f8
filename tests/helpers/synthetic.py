"""Synthetic inputs for fast tests: a body-like CT, random oblique directions, a tiny ONNX network."""
import itertools

import numpy as np
import SimpleITK as sitk

_CODES = ["".join(p) for p in itertools.product("LR", "PA", "SI")]
ALL_CODES = sorted({"".join(c[i] for i in perm) for c in _CODES for perm in itertools.permutations(range(3))})


def synthetic_ct(shape_zyx, spacing_zyx, seed=0, dtype=np.int16) -> sitk.Image:
    """A body-like ellipsoid with organ-like blobs, in HU, on a grid with the given (z,y,x) spacing."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape_zyx), indexing="ij")
    hu = np.full(shape_zyx, -1000.0)
    hu[(x / 0.9) ** 2 + (y / 0.7) ** 2 < 1] = 0
    hu[((x - 0.3) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 + (z / 0.6) ** 2 < 1] = 60
    hu[((x + 0.5) / 0.15) ** 2 + ((y - 0.2) / 0.15) ** 2 + ((z - 0.2) / 0.3) ** 2 < 1] = 150
    hu += rng.normal(0, 10, shape_zyx)
    image = sitk.GetImageFromArray(hu.astype(dtype))
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    image.SetOrigin((-12.5, 30.25, -400.0))
    return image


def random_oblique(tilt_deg: float, seed: int = 0) -> tuple[float, ...]:
    """A direction matrix tilted by up to `tilt_deg` about a random axis (stays closest to identity)."""
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.deg2rad(tilt_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    return tuple(rot.ravel())


def toy_network(shape=(24, 48, 48), classes: int = 6, seed: int = 0):
    """A 3x3x3 conv with seeded random weights (2 window channels -> `classes` scores), as an ONNX model.

    Its kernel is not symmetric, so any orientation slip changes the labels.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, (classes, 2, 3, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.5, classes).astype(np.float32)
    node = helper.make_node("Conv", ["img", "w", "b"], ["output"], pads=[1] * 6)
    graph = helper.make_graph(
        [node], "toy",
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, *shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, classes, *shape])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
