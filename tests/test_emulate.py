"""The emulator against FINN's own Python execution of HW layers, on random networks and on a built run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flow.artifacts import write_hardware_artifacts
from flow.emulate import Emulator
from flow.errors import FlowError

BOARD = {"board": "test", "part": "xc7z020clg400-1", "clock_mhz": 100.0, "dma_width_bits": 64}
IMAGES = 12


# --------------------------------------------------------------------------- random HW networks


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def bits_for(value: int) -> int:
    return max(1, int(np.ceil(np.log2(value + 1))))


class NetworkBuilder:
    """A chain of FINN HW nodes (Thresholding_rtl, MVAU, LabelSelect) made with onnx.helper."""

    def __init__(self, rng: np.random.Generator, input_dtype: str, channels: int):
        self.rng = rng
        self.nodes, self.initializers, self.dtypes = [], {}, {}
        self.tensor, self.dtype, self.width = "global_in", input_dtype, channels
        self.input_shape = [1, channels]
        self.dtypes["global_in"] = input_dtype

    def _next(self, name: str, dtype: str, width: int) -> str:
        out = f"{name}_out"
        self.tensor, self.dtype, self.width = out, dtype, width
        self.dtypes[out] = dtype
        return out

    def _sorted_thresholds(self, rows: int, steps: int, low: int, high: int) -> np.ndarray:
        return np.sort(self.rng.integers(low, high + 1, size=(rows, steps)), axis=1).astype(np.float32)

    def thresholding(self, pe: int, steps: int):
        from onnx import helper
        from qonnx.core.datatype import DataType

        name = f"Thresholding_rtl_{len(self.nodes)}"
        idt = DataType[self.dtype]
        thresholds = self._sorted_thresholds(self.width, steps, int(idt.min()), int(idt.max()) + 1)
        odt = "BINARY" if steps == 1 else f"UINT{bits_for(steps)}"
        self.initializers[f"{name}_thr"] = (thresholds, f"INT{bits_for(max(abs(idt.min()), idt.max()) + 1) + 1}")
        inp = self.tensor
        out = self._next(name, odt, self.width)
        self.nodes.append(helper.make_node(
            "Thresholding_rtl", [inp, f"{name}_thr"], [out], name=name, domain="finn.custom_op.fpgadataflow.rtl",
            backend="fpgadataflow", NumChannels=self.width, PE=pe, numSteps=steps, inputDataType=self.dtypes[inp],
            weightDataType=self.initializers[f"{name}_thr"][1], outputDataType=odt, ActVal=0, numInputVectors=[1],
            exec_mode="cppsim",
        ))

    def mvau(self, mh: int, simd: int, pe: int, steps: int | None, integer_weights: bool = False):
        """steps None: no activation (the scores layer); 1: binary output; 3: UINT2 output."""
        from onnx import helper
        from qonnx.core.datatype import DataType

        name = f"MVAU_{len(self.nodes)}"
        mw = self.width
        xnor = self.dtype == "BINARY"
        if xnor:
            weights, wdt = self.rng.integers(0, 2, size=(mw, mh)), "BINARY"
            acc_low, acc_high = 0, mw
        else:
            if integer_weights:
                weights, wdt = self.rng.integers(-2, 2, size=(mw, mh)), "INT2"
            else:
                weights, wdt = self.rng.choice([-1, 1], size=(mw, mh)), "BIPOLAR"
            idt = DataType[self.dtype]
            low = np.minimum(weights * idt.min(), weights * idt.max()).sum(axis=0)
            high = np.maximum(weights * idt.min(), weights * idt.max()).sum(axis=0)
            acc_low, acc_high = int(low.min()), int(high.max())
        inputs = [self.tensor, f"{name}_w"]
        self.initializers[f"{name}_w"] = (weights.astype(np.float32), wdt)
        acc_bits = bits_for(max(abs(acc_low), abs(acc_high)) + 1) + 1
        if steps is None:
            odt = f"INT{acc_bits}"
        else:
            odt = "BINARY" if steps == 1 else f"UINT{bits_for(steps)}"
            inputs.append(f"{name}_thr")
            self.initializers[f"{name}_thr"] = (self._sorted_thresholds(mh, steps, acc_low, acc_high + 1), f"INT{acc_bits + 1}")
        inp = self.tensor
        out = self._next(name, odt, mh)
        self.nodes.append(helper.make_node(
            "MVAU", inputs, [out], name=name, domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
            MW=mw, MH=mh, SIMD=simd, PE=pe, inputDataType=self.dtypes[inp], weightDataType=wdt,
            outputDataType=odt, binaryXnorMode=int(xnor), noActivation=int(steps is None), ActVal=0,
            accDataType=f"INT{acc_bits + 1}", numInputVectors=[1],
        ))

    def label_select(self, pe: int, k: int):
        from onnx import helper

        name = f"LabelSelect_{len(self.nodes)}"
        inp, labels = self.tensor, self.width
        out = self._next(name, "UINT8", k)
        self.nodes.append(helper.make_node(
            "LabelSelect", [inp], [out], name=name, domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
            Labels=labels, PE=pe, K=k, inputDataType=self.dtypes[inp], outputDataType="UINT8", numInputVectors=[1],
        ))

    def model(self):
        from onnx import TensorProto, helper
        from qonnx.core.datatype import DataType
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.util.basic import qonnx_make_model

        graph = helper.make_graph(
            self.nodes, "random_bnn",
            [helper.make_tensor_value_info("global_in", TensorProto.FLOAT, self.input_shape)],
            [helper.make_tensor_value_info(self.tensor, TensorProto.FLOAT, [1, self.width])],
        )
        model = ModelWrapper(qonnx_make_model(graph))
        for name, (value, dtype) in self.initializers.items():
            model.set_initializer(name, value)
            model.set_tensor_datatype(name, DataType[dtype])
        for name, dtype in self.dtypes.items():
            model.set_tensor_datatype(name, DataType[dtype])
        from qonnx.transformation.infer_shapes import InferShapes

        return model.transform(InferShapes())


@st.composite
def networks(draw):
    """Random chains: an input unit (thresholds, or an integer-input MVAU), 1-3 hidden MVAUs, scores, label select."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    first = draw(st.sampled_from(["thresholding", "integer_mvau"]))
    input_dtype = draw(st.sampled_from(["UINT8", "UINT4", "INT4"] if first == "thresholding" else ["UINT8", "INT8", "UINT2"]))
    channels = draw(st.sampled_from([8, 12, 16, 24, 32, 48, 64]))
    net = NetworkBuilder(rng, input_dtype, channels)
    if first == "thresholding":
        net.thresholding(pe=draw(st.sampled_from(divisors(channels))), steps=draw(st.sampled_from([1, 3])))
    else:
        mh = draw(st.sampled_from([8, 16, 32]))
        net.mvau(mh, draw(st.sampled_from(divisors(channels))), draw(st.sampled_from(divisors(mh))), steps=1,
                 integer_weights=draw(st.booleans()))
    for _ in range(draw(st.integers(1, 3))):
        mh = draw(st.sampled_from([4, 8, 12, 16, 32, 64]))
        net.mvau(mh, draw(st.sampled_from(divisors(net.width))), draw(st.sampled_from(divisors(mh))),
                 steps=draw(st.sampled_from([1, 1, 3])))
    labels = draw(st.sampled_from([2, 5, 10]))
    net.mvau(labels, draw(st.sampled_from(divisors(net.width))), draw(st.sampled_from(divisors(labels))), steps=None)
    net.label_select(pe=draw(st.sampled_from(divisors(labels))), k=draw(st.integers(1, min(3, labels))))
    return net, rng


def finn_layer_outputs(model, images: np.ndarray) -> dict[str, np.ndarray]:
    from flow.graphs import execute_batched

    tensors = execute_batched(model, images, batch=len(images), keep=[node.output[0] for node in model.graph.node])
    return {node.name: tensors[node.output[0]].reshape(len(images), -1) for node in model.graph.node}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(networks())
def test_emulator_equals_finn_execution_on_random_networks(network):
    from qonnx.core.datatype import DataType
    from qonnx.util.basic import gen_finn_dt_tensor

    net, rng = network
    model = net.model()
    np.random.seed(int(rng.integers(2**31)))  # gen_finn_dt_tensor draws from numpy's global generator
    images = gen_finn_dt_tensor(DataType[net.dtypes["global_in"]], (IMAGES, net.input_shape[1])).astype(np.int64)
    expected = finn_layer_outputs(model, images)
    with tempfile.TemporaryDirectory() as tmp:
        write_hardware_artifacts(model, Path(tmp) / "hw", BOARD)
        for route in ("gemm", "packed"):
            emulator = Emulator(Path(tmp) / "hw", route=route)
            layers = emulator.execute_layers(images)
            for name, values in expected.items():
                np.testing.assert_array_equal(layers[name], values.astype(np.int64), err_msg=f"{route}: layer {name}")
            np.testing.assert_array_equal(emulator.execute(images), expected[model.graph.node[-1].name].astype(np.int64))


def test_popcount_of_mw_wraps_in_a_narrow_accumulator():
    """finn-hlslib accumulates into the output type: a popcount of 64 in INT7 reads -64, as ap_int<7> wraps."""
    from qonnx.core.datatype import DataType
    from qonnx.custom_op.registry import getCustomOp

    net = NetworkBuilder(np.random.default_rng(0), "BINARY", 64)
    net.mvau(4, 16, 2, steps=None)
    model = net.model()
    (node,) = model.graph.node
    getCustomOp(node).set_nodeattr("outputDataType", "INT7")
    model.set_tensor_datatype(node.output[0], DataType["INT7"])
    weights = model.get_initializer(node.input[1])
    images = np.stack([weights[:, 0], 1 - weights[:, 0]]).astype(np.int64)  # all 64 bits match column 0, then none
    with tempfile.TemporaryDirectory() as tmp:
        write_hardware_artifacts(model, Path(tmp) / "hw", BOARD)
        scores = Emulator(Path(tmp) / "hw").execute_layers(images)[node.name]
    assert scores[0, 0] == -64  # 64 wrapped
    assert scores[1, 0] == 0
    assert finn_layer_outputs(model, images)[node.name][0, 0] == 64  # FINN's Python execution does not wrap


# --------------------------------------------------------------------------- a built run


def hw_copy(run_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(run_dir / "hw", tmp_path / "hw"))


def test_run_emulator_matches_hw_graph_and_cycle_report(tfc_run):
    from qonnx.core.modelwrapper import ModelWrapper

    from flow import data
    from flow.graphs import execute_batched, predictions

    emulator = Emulator(tfc_run / "hw")
    images = data.load("mnist5k").test_images[:300]
    reference = predictions(execute_batched(ModelWrapper(str(tfc_run / "intermediate_models" / "step_convert_to_hw.onnx")), images))
    np.testing.assert_array_equal(emulator.execute(images)[:, 0], reference)
    report = json.loads((tfc_run / "report" / "estimate_layer_cycles.json").read_text())
    assert emulator.cycles["layer_cycles"] == report
    performance = json.loads((tfc_run / "report" / "estimate_network_performance.json").read_text())
    assert emulator.cycles["estimated_fps"] == pytest.approx(performance["estimated_throughput_fps"])


def test_execute_packed_round_trip_uses_finn_packing(tfc_run):
    from finn.util.data_packing import finnpy_to_packed_bytearray, packed_bytearray_to_finnpy

    from flow import data

    emulator = Emulator(tfc_run / "hw")
    images = data.load("mnist5k").test_images[:50]
    folded = images.reshape(50, *emulator.ishape_folded[1:])
    packed_in = finnpy_to_packed_bytearray(folded, emulator.idt, reverse_inner=True, reverse_endian=True)
    packed_out = emulator.execute_packed(np.ascontiguousarray(packed_in))
    assert packed_out.shape == (50, *emulator.oshape_packed[1:]) and packed_out.dtype == np.uint8
    labels = packed_bytearray_to_finnpy(packed_out, emulator.odt, (50, *emulator.oshape_folded[1:]), reverse_inner=True, reverse_endian=True)
    np.testing.assert_array_equal(labels.reshape(50, -1).astype(np.int64), emulator.execute(images))


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((4, 1, 28, 28), dtype=np.float32), "dtype float32"),
        (np.zeros((4, 1, 28, 27), dtype=np.uint8), "input shape (4, 1, 28, 27)"),
        (np.full((4, 784), 256, dtype=np.int64), "outside UINT8"),
        (np.full((4, 784), -1, dtype=np.int16), "outside UINT8"),
        ([[0] * 784], "numpy array"),
    ],
)
def test_execute_rejects_bad_input_with_one_clear_error(tfc_run, images, message):
    with pytest.raises(FlowError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Emulator(tfc_run / "hw").execute(images)


def test_changed_file_is_refused_before_anything_runs(tfc_run, tmp_path):
    hw = hw_copy(tfc_run, tmp_path)
    weights = next(hw.glob("MVAU_*_weights.npy"))
    memory = np.load(weights)
    memory[0, 0, 0] ^= 1
    np.save(weights, memory)
    with pytest.raises(FlowError, match=f"{weights.name}: sha256 differs"):
        Emulator(hw)
    (hw / "manifest.json").unlink()
    with pytest.raises(FlowError, match="no hardware manifest"):
        Emulator(hw)
