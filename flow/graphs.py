"""Executing ONNX graphs of every level (QONNX, FINN-ONNX, HW layers) on image batches.

qonnx' executor runs node by node at the batch size written in the graph.
:class:`SetBatchSize` rewrites a copy of the graph for a batch of N (the batch
dimension of every shape plus the HW layers' ``numInputVectors``), so one call
runs a whole batch instead of N calls of one image.

qonnx 1.0.0's ``Im2Col`` (which FINN's sliding-window generator also runs in
Python) is correct only for a batch of 1: its column matrix keeps the image
index innermost, and the final reshape interleaves the images (64 % of the
elements of a 2-image batch were wrong on CNV). FINN itself always runs
batch 1. :class:`Im2Col` below is registered in its place: the same column
matrix, reshaped with the image index where it is.

Two costs of the reference executor grow with CNV's feature maps and are
avoided without changing a value: ``XnorPopcountMatMul`` and FINN's ``MVAU``
multiply N x H x W x K stacks, which numpy runs as N*H small products (6.3 s
per 100 CNV images; :class:`XnorPopcountMatMul` and :class:`MVAU` run the
upstream code on the N*H*W vectors as one 2-D product: integer sums in float
are exact in any order), and qonnx' per-node "sanitize" step takes Python's
built-in ``max`` over every element of every integer tensor (9 s per 100
images). It is switched off (``SANITIZE_QUANT_TENSORS=0``); instead every
integer-annotated tensor of the execution must hold integers exactly
(:func:`check_integer_tensors`), which is stricter than its silent rounding.
"""

from __future__ import annotations

import copy
import os

import numpy as np
from finn.custom_op.fpgadataflow.matrixvectoractivation import MVAU as UpstreamMVAU
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.im2col import Im2Col as UpstreamIm2Col
from qonnx.custom_op.general.im2col import compute_conv_output_dim, im2col_indices_nchw
from qonnx.custom_op.general.xnorpopcount import XnorPopcountMatMul as UpstreamXnorPopcountMatMul
from qonnx.custom_op.general.xnorpopcount import xnorpopcountmatmul
from qonnx.custom_op.registry import add_op_to_domain, getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_shapes import InferShapes


class Im2Col(UpstreamIm2Col):
    """qonnx' Im2Col with the image index put where it belongs (see the module docstring).

    The upstream column matrix for the whole batch (``im2col_indices_nchw``) is
    C*K*K x (OH*OW*N), image index innermost; it is reordered to N x OH x OW x
    (K*K*C). The first image is also run through the unmodified upstream code
    (its checks included), and the two must agree.
    """

    def execute_node(self, context, graph):
        node = self.onnx_node
        batch = context[node.input[0]]
        if len(batch) == 1:
            return super().execute_node(context, graph)
        first = {node.input[0]: batch[:1], node.output[0]: None}
        super().execute_node(first, graph)
        k_h, k_w = self.get_nodeattr("kernel_size")
        stride_h, stride_w = self.get_nodeattr("stride")
        dilation_h, dilation_w = self.get_nodeattr("dilations")
        pad = self.get_nodeattr("pad_amount")
        n, h, w, c = batch.shape
        out_h = compute_conv_output_dim(h, k_h, stride_h, pad[0] + pad[2], dilation_h)
        out_w = compute_conv_output_dim(w, k_w, stride_w, pad[1] + pad[3], dilation_w)
        columns = im2col_indices_nchw(
            batch.transpose(0, 3, 1, 2), h, w, k_h, k_w, pad, stride_h, stride_w,
            pad_val=self.get_nodeattr("pad_value"), dilation_h=dilation_h, dilation_w=dilation_w,
        )
        windows = columns.reshape(c, k_h, k_w, out_h, out_w, n).transpose(5, 3, 4, 1, 2, 0).reshape(n, out_h, out_w, -1)
        if not np.array_equal(windows[:1], first[node.output[0]]):
            raise AssertionError(f"{node.name}: batched im2col differs from qonnx' on the first image")
        context[node.output[0]] = windows


class XnorPopcountMatMul(UpstreamXnorPopcountMatMul):
    """qonnx' XnorPopcountMatMul on N x ... x K inputs as one 2-D product (see the module docstring)."""

    def execute_node(self, context, graph):
        node = self.onnx_node
        x, weights = context[node.input[0]], context[node.input[1]]
        product = xnorpopcountmatmul(x.reshape(-1, x.shape[-1]), weights)
        context[node.output[0]] = product.reshape(*x.shape[:-1], weights.shape[-1])


class MVAU(UpstreamMVAU):
    """FINN's MVAU Python execution, on a convolution's pixels as one matrix (see the module docstring)."""

    def execute_node(self, context, graph):
        vectors = list(self.get_nodeattr("numInputVectors"))
        if len(vectors) == 1:
            return super().execute_node(context, graph)
        node = self.onnx_node
        flat = dict(context)
        flat[node.input[0]] = context[node.input[0]].reshape(-1, self.get_nodeattr("MW"))
        flat[node.output[0]] = np.empty((len(flat[node.input[0]]), self.get_nodeattr("MH")), dtype=np.float32)
        self.set_nodeattr("numInputVectors", [int(np.prod(vectors))])
        try:
            super().execute_node(flat, graph)
        finally:
            self.set_nodeattr("numInputVectors", vectors)
        context[node.output[0]] = flat[node.output[0]].reshape(context[node.output[0]].shape)


for _op in (Im2Col, XnorPopcountMatMul):
    add_op_to_domain("qonnx.custom_op.general", _op)
add_op_to_domain("finn.custom_op.fpgadataflow", MVAU)


# ops that only move or select values: their outputs are integers when their inputs are
DATA_MOVEMENT_OPS = ("Im2Col", "Transpose", "Reshape", "Flatten", "MaxPool", "MaxPoolNHWC", "ConvolutionInputGenerator", "Pool")


def check_integer_tensors(model: ModelWrapper, context: dict[str, np.ndarray]) -> None:
    """Every tensor annotated with an integer type holds integers (float carriers, exactly).

    Outputs of pure data movement (im2col windows, transposes, max-pools) are
    skipped: they hold values of tensors checked already, and are the largest.
    """
    from flow.errors import FlowError

    moved = {out for node in model.graph.node if node.op_type.startswith(DATA_MOVEMENT_OPS) for out in node.output}
    for name, values in context.items():
        if name in moved or not isinstance(values, np.ndarray) or values.dtype.kind != "f":
            continue
        if model.get_tensor_datatype(name).is_integer() and not np.array_equal(values, np.round(values)):
            raise FlowError(f"executing the graph: tensor '{name}' is annotated {model.get_tensor_datatype(name).name} but holds non-integers")


class SetBatchSize(Transformation):
    """Make the graph process ``batch`` images per execution."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch = batch

    def apply(self, model: ModelWrapper):
        # qonnx' ChangeBatchSize drops every intermediate shape; the shape inference of
        # NHWC max-pools needs their input shapes, so the batch dimension is rewritten instead
        graph = model.graph
        per_image = {graph.input[0].name}  # tensors computed from the images (not from weights)
        for node in graph.node:
            if per_image.intersection(node.input):
                per_image.update(node.output)
        for info in [*graph.input, *graph.output, *graph.value_info]:
            dims = info.type.tensor_type.shape.dim
            if info.name in per_image and len(dims) > 0:
                dims[0].dim_value = self.batch
        for reshape in model.get_nodes_by_op_type("Reshape"):
            shape = model.get_initializer(reshape.input[1])
            if shape is not None:
                shape = shape.copy()
                shape[0] = self.batch
                model.set_initializer(reshape.input[1], shape)
        for node in model.graph.node:
            if node.domain.startswith("finn.custom_op.fpgadataflow"):
                inst = getCustomOp(node)
                attrs = inst.get_nodeattr_types()
                if "numInputVectors" in attrs:
                    vectors = list(inst.get_nodeattr("numInputVectors"))
                    inst.set_nodeattr("numInputVectors", [self.batch] + vectors[1:])
                elif "BatchSize" in attrs:  # Pool
                    inst.set_nodeattr("BatchSize", self.batch)
                # a sliding-window generator's Python execution (im2col) takes any batch
            elif node.op_type == "Im2Col":  # its shape inference reads the batch from input_shape
                inst = getCustomOp(node)
                shape = inst.get_nodeattr("input_shape").strip("()").split(",")
                inst.set_nodeattr("input_shape", "(" + ",".join([str(self.batch)] + shape[1:]) + ")")
        return model.transform(InferShapes()), False


def execute_batched(
    model: ModelWrapper, images: np.ndarray, batch: int = 250, keep: list[str] | None = None,
    progress: str | None = None,
) -> np.ndarray | dict[str, np.ndarray]:
    """Run ``model`` on ``images`` (N x ...); return the stacked graph output.

    With ``keep`` (tensor names) those tensors of the execution are returned
    instead, each stacked over the images, for per-layer comparison. With
    ``progress`` (a description) a progress bar counts the images.
    """
    from flow.terminal import progress_bar

    from finn.core.onnx_exec import execute_onnx

    in_name = model.graph.input[0].name
    out_name = model.graph.output[0].name
    in_shape = model.get_tensor_shape(in_name)[1:]
    kept: dict[str, list[np.ndarray]] = {name: [] for name in (keep or [out_name])}
    batched = {}
    sanitize = os.environ.get("SANITIZE_QUANT_TENSORS")
    os.environ["SANITIZE_QUANT_TENSORS"] = "0"  # replaced by check_integer_tensors (module docstring)
    bar = progress_bar(enabled=progress is not None)
    task = bar.add_task(progress or "", total=len(images))
    try:
        with bar:
            for start in range(0, len(images), batch):
                chunk = images[start : start + batch].astype(np.float32).reshape(-1, *in_shape)
                if len(chunk) not in batched:
                    batched[len(chunk)] = copy.deepcopy(model).transform(SetBatchSize(len(chunk)))
                context = execute_onnx(batched[len(chunk)], {in_name: chunk}, return_full_exec_context=True)
                check_integer_tensors(batched[len(chunk)], context)
                for name, parts in kept.items():
                    parts.append(context[name])
                bar.advance(task, len(chunk))
    finally:
        if sanitize is None:
            del os.environ["SANITIZE_QUANT_TENSORS"]
        else:
            os.environ["SANITIZE_QUANT_TENSORS"] = sanitize
    stacked = {name: np.concatenate(parts) for name, parts in kept.items()}
    return stacked if keep is not None else stacked[out_name]


def predictions(output: np.ndarray) -> np.ndarray:
    """Class indices from logits (N x classes) or from a label-select output (N x 1)."""
    output = output.reshape(len(output), -1)
    if output.shape[1] == 1:
        return output[:, 0].astype(np.int64)
    return output.argmax(axis=1)
