"""YOLOX ONNX files through ``onnxruntime`` (optional dependency): any input size, any batch.

The shipped YOLOX-Nano export fixes its input at 1x3x416x416 and its head's reshapes at batch
1; cv2.dnn re-plans the graph for other sizes but scrambles batched blobs (see ``cvdnn.py``).
:func:`yolox_dynamic` rewrites the graph in memory (symbolic batch/height/width, reshapes that
copy the batch) and can also expose the head's branch activations (the box grader's feature
maps) as extra outputs. On the 2-core machine here a 416 px pass took 3x less CPU than
cv2.dnn (docs/clipgrader.md), and crops of one image run as one batch.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

NUM_DET_CLASSES = 80


def available() -> bool:
    """Whether onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _branch_inputs(model) -> list[tuple[str, str]]:
    """Per level (in graph order: strides 8, 16, 32), the names of the (class, box) branch
    activations: the 64-channel inputs of the 1x1 convs that predict 80 classes / 4 offsets."""
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    cls, reg = [], []
    for n in model.graph.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = inits[n.input[1]]
        if len(w) == 4 and w[1] == 64 and w[2:] == (1, 1) and w[0] in (NUM_DET_CLASSES, 4):
            (cls if w[0] == NUM_DET_CLASSES else reg).append(n.input[0])
    if len(cls) != 3 or len(reg) != 3:
        raise RuntimeError(f"unexpected YOLOX graph: class branches {cls}, box branches {reg}")
    return list(zip(cls, reg))


def yolox_dynamic(model_path: str, branch_outputs: bool = False) -> tuple[bytes, list[str]]:
    """The YOLOX ONNX graph with a symbolic input (N, 3, H, W) and batch-copying reshapes,
    serialised; plus the output names (``output``, then the branch activations per level,
    class then box, when ``branch_outputs``)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(model_path)
    g = model.graph
    inp = g.input[0].type.tensor_type.shape.dim
    for d, name in zip(inp, ("N", None, "H", "W")):
        if name:
            d.ClearField("dim_value")
            d.dim_param = name
    inits = {i.name: i for i in g.initializer}
    for n in g.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shape = numpy_helper.to_array(inits[n.input[1]]).copy()
            if len(shape) and shape[0] == 1:
                shape[0] = 0  # 0 = copy the input's batch dimension
                inits[n.input[1]].CopyFrom(numpy_helper.from_array(shape, n.input[1]))
    # Stale static shapes would contradict the new sizes: let onnxruntime infer them.
    del g.value_info[:]
    for o in g.output:
        o.type.tensor_type.ClearField("shape")
    names = [g.output[0].name]
    if branch_outputs:
        for c, r in _branch_inputs(model):
            for t in (c, r):
                g.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
                names.append(t)
    return model.SerializeToString(), names


class OrtYolox:
    """A YOLOX ONNX file as an onnxruntime session taking NCHW float32 blobs of any size/batch.

    ``threads``: intra-op threads (default ``$LABEL_GRADER_ORT_THREADS`` or onnxruntime's own
    choice); CUDA is used when onnxruntime has it."""

    def __init__(self, model_path: str, branch_outputs: bool = False, threads: int | None = None):
        import onnxruntime as ort

        data, self.output_names = yolox_dynamic(model_path, branch_outputs)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        threads = threads or int(os.environ.get("LABEL_GRADER_ORT_THREADS", "1") or 1)
        if threads:
            so.intra_op_num_threads = threads
        avail = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        self.session = ort.InferenceSession(data, so, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        """Outputs for ``blob`` (N, 3, H, W): ``(N, A, 85)`` raw head, then the branch maps."""
        return self.session.run(self.output_names, {self.input_name: blob})

    def run_batched(self, blob: np.ndarray, batch: int = 32) -> list[np.ndarray]:
        """:meth:`run` in chunks of ``batch`` images (bounded memory), outputs concatenated."""
        if len(blob) <= batch:
            return self.run(blob)
        parts: list[Sequence[np.ndarray]] = [self.run(blob[s:s + batch])
                                             for s in range(0, len(blob), batch)]
        return [np.concatenate(p, 0) for p in zip(*parts)]
