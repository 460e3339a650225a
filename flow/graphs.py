"""Executing ONNX graphs of every level (QONNX, FINN-ONNX, HW layers) on image batches.

qonnx' executor runs node by node at the batch size written in the graph.
:class:`SetBatchSize` rewrites a copy of the graph for a batch of N (qonnx'
``ChangeBatchSize`` plus the HW layers' ``numInputVectors``), so one call
runs a whole batch instead of N calls of one image.
"""

from __future__ import annotations

import copy

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.change_batchsize import ChangeBatchSize
from qonnx.transformation.infer_shapes import InferShapes


class SetBatchSize(Transformation):
    """Make the graph process ``batch`` images per execution."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch = batch

    def apply(self, model: ModelWrapper):
        model = model.transform(ChangeBatchSize(self.batch))
        for node in model.graph.node:
            if node.domain.startswith("finn.custom_op.fpgadataflow"):
                inst = getCustomOp(node)
                vectors = list(inst.get_nodeattr("numInputVectors"))
                inst.set_nodeattr("numInputVectors", [self.batch] + vectors[1:])
        return model.transform(InferShapes()), False


def execute_batched(
    model: ModelWrapper, images: np.ndarray, batch: int = 250, return_context: bool = False
) -> np.ndarray | list[dict[str, np.ndarray]]:
    """Run ``model`` on ``images`` (N x ...); return the stacked graph output.

    With ``return_context`` the full execution contexts (every tensor of the
    graph) are returned instead, one dict per chunk, for per-layer comparison.
    """
    from finn.core.onnx_exec import execute_onnx

    in_name = model.graph.input[0].name
    out_name = model.graph.output[0].name
    in_shape = model.get_tensor_shape(in_name)[1:]
    outputs, contexts, batched = [], [], {}
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch].astype(np.float32).reshape(-1, *in_shape)
        if len(chunk) not in batched:
            batched[len(chunk)] = copy.deepcopy(model).transform(SetBatchSize(len(chunk)))
        context = execute_onnx(batched[len(chunk)], {in_name: chunk}, return_full_exec_context=return_context)
        (contexts if return_context else outputs).append(context if return_context else context[out_name])
    return contexts if return_context else np.concatenate(outputs)


def predictions(output: np.ndarray) -> np.ndarray:
    """Class indices from logits (N x classes) or from a label-select output (N x 1)."""
    output = output.reshape(len(output), -1)
    if output.shape[1] == 1:
        return output[:, 0].astype(np.int64)
    return output.argmax(axis=1)
