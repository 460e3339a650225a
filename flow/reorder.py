"""Moving max-pools past the thresholds, as FINN's dataflow hardware needs them.

In a conv -> max-pool -> batch-norm -> sign block the max-pool sits between a
convolution and its thresholds; FINN can only fuse thresholds into the
convolution's MVAU, and pools binary activations. ``max`` commutes with a
non-decreasing function, so ``sign(bn(max(x))) = max(sign(bn(x)))`` when the
batch-norm scale is positive: FINN's ``MoveMaxPoolPastMultiThreshold`` does
that swap. A negative scale makes the threshold *decreasing*: FINN's
streamlining leaves a channel-wise sign (a ``Mul`` by +-1) between the
max-pool and the thresholds, and max-pool does not commute with it.

:class:`MoveMaxPoolPastThresholds` handles both. For a channel with sign
``s = -1`` and integer pre-pool values ``x`` (the popcounts of a binary
convolution), with the bipolar output ``y = +1 if s * m >= T else -1``
where ``m = max(x)``:

    [-m >= T] = [m <= -T] = 1 - [m >= floor(-T) + 1]

so ``y = -y'`` with ``y'`` the output of the non-decreasing threshold
``T' = floor(-T) + 1``, which commutes with the max-pool. The block becomes
thresholds(T') -> max-pool -> negate channel, and the negation is absorbed
into the next convolution's bipolar weights (its input channel c times -1),
so the hardware carries no extra operation. Whatever cannot be reordered this
way (a non-integer input, a multi-level activation, a fork, a consumer other
than a convolution) stops the build with the node's name.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes

from flow.errors import FlowError


def _single_consumer(model: ModelWrapper, node, what: str):
    consumers = model.find_consumers(node.output[0]) or []
    if len(consumers) != 1:
        raise FlowError(
            f"max-pool reordering: {what} '{node.name}' ({node.op_type}) feeds {len(consumers)} nodes; "
            "a max-pool can be moved past thresholds only on a linear chain"
        )
    return consumers[0]


def _channel_signs(model: ModelWrapper, mul, channels: int) -> np.ndarray:
    """The +-1 per channel of the Mul that streamlining left after a max-pool (NCHW)."""
    factor = model.get_initializer(mul.input[1])
    if factor is None or not np.all(np.isin(factor, (-1.0, 1.0))) or factor.size not in (1, channels):
        raise FlowError(
            f"max-pool reordering: '{mul.name}' between the max-pool and its thresholds scales by "
            "values other than +-1; only the sign of a batch-norm scale can stay there after streamlining"
        )
    return np.broadcast_to(factor.reshape(-1), (channels,)).astype(np.float32)


class MoveMaxPoolPastThresholds(Transformation):
    """MaxPool [-> Mul(+-1 per channel)] -> MultiThreshold(bipolar)  =>  MultiThreshold -> MaxPool.

    Runs on the streamlined NCHW graph (before convolutions are lowered).
    """

    def apply(self, model: ModelWrapper):
        for pool in model.get_nodes_by_op_type("MaxPool"):
            pool_index = list(model.graph.node).index(pool)
            next_node = _single_consumer(model, pool, "max-pool")
            mul = next_node if next_node.op_type == "Mul" else None
            threshold = _single_consumer(model, mul, "sign") if mul is not None else next_node
            if threshold.op_type != "MultiThreshold":
                # thresholds already precede this max-pool (conv -> BN -> sign -> pool)
                if mul is None:
                    continue
                raise FlowError(
                    f"max-pool reordering: '{pool.name}' is followed by '{mul.name}' -> '{threshold.name}' "
                    f"({threshold.op_type}), not by thresholds; this block cannot be mapped to the hardware"
                )
            source = pool.input[0]
            channels = model.get_tensor_shape(source)[1]
            if not model.get_tensor_datatype(source).is_integer():
                raise FlowError(
                    f"max-pool reordering: the input of '{pool.name}' is {model.get_tensor_datatype(source).name}, "
                    "not integer; the thresholds cannot be moved before it exactly"
                )
            thresholds_inst = getCustomOp(threshold)
            if thresholds_inst.get_nodeattr("out_dtype") != "BIPOLAR":
                raise FlowError(
                    f"max-pool reordering: '{threshold.name}' outputs {thresholds_inst.get_nodeattr('out_dtype')}; "
                    "only binary (sign) activations after a max-pool are supported"
                )
            signs = _channel_signs(model, mul, channels) if mul is not None else np.ones(channels, np.float32)
            thresholds = model.get_initializer(threshold.input[1])
            thresholds = np.broadcast_to(thresholds, (channels, thresholds.shape[1])).astype(np.float32).copy()
            negated = signs < 0
            thresholds[negated] = np.floor(-thresholds[negated]) + 1
            if negated.any():
                absorb_input_channel_signs(model, _single_consumer(model, threshold, "thresholds"), signs)
            model.set_initializer(threshold.input[1], thresholds)

            # source -> thresholds -> pooled bits, which the old output name carries on
            output = threshold.output[0]
            thresholded = model.make_new_valueinfo_name()
            model.set_tensor_shape(thresholded, model.get_tensor_shape(source))
            threshold.input[0], threshold.output[0] = source, thresholded
            pool.input[0], pool.output[0] = thresholded, output
            for node in [pool, threshold] + ([mul] if mul is not None else []):
                model.graph.node.remove(node)
            model.graph.node.insert(pool_index, threshold)
            model.graph.node.insert(pool_index + 1, pool)
            return model.transform(InferShapes()).transform(InferDataTypes()), True
        return model, False


def absorb_input_channel_signs(model: ModelWrapper, conv, signs: np.ndarray) -> None:
    """Multiply input channel c of ``conv``'s bipolar weights by ``signs[c]``."""
    group = next((a.i for a in conv.attribute if a.name == "group"), 1)
    weights = model.get_initializer(conv.input[1]) if conv.op_type == "Conv" else None
    if weights is None or group != 1:
        raise FlowError(
            f"max-pool reordering: a negative batch-norm scale before a max-pool needs the next layer to be a "
            f"convolution with embedded weights (to absorb the sign), but it is '{conv.name}' ({conv.op_type})"
        )
    model.set_initializer(conv.input[1], weights * signs[None, :, None, None])
