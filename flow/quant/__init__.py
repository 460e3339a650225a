"""Binary quantizers, chosen by name (``QUANT=...``).

Each entry pairs a Brevitas weight quantizer and an activation quantizer
(injector classes usable as ``weight_quant=`` / ``act_quant=`` on any
``brevitas.nn`` layer). All of them export to plain QONNX ``BipolarQuant``
nodes, so export and build are the same whatever was used in training.
"""

from __future__ import annotations

from dataclasses import dataclass

from flow.errors import FlowError
from flow.quant.ste import SteActQuant, SteWeightQuant


@dataclass(frozen=True)
class BinaryQuantizers:
    weight: type
    act: type
    description: str


QUANTIZERS: dict[str, BinaryQuantizers] = {
    "ste": BinaryQuantizers(
        SteWeightQuant, SteActQuant, "Brevitas' binary quantizers: sign forward, clipped straight-through backward"
    ),
}


def get_quantizers(name: str) -> BinaryQuantizers:
    if name not in QUANTIZERS:
        raise FlowError(f"unknown quantizer '{name}'; known quantizers: {', '.join(QUANTIZERS)}")
    return QUANTIZERS[name]
