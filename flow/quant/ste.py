"""The straight-through-estimator baseline: Brevitas' own binary quantizers.

Scale 1.0 (as in Brevitas' bnn_pynq examples) so the quantized values are
exactly +-1 and QONNX ``BipolarQuant`` carries them unchanged into FINN.
"""

from brevitas.quant.binary import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst


class SteWeightQuant(SignedBinaryWeightPerTensorConst):
    scaling_const = 1.0


class SteActQuant(SignedBinaryActPerTensorConst):
    pass
