"""Export: trained checkpoint -> QONNX (``model.onnx``), checked by execution.

The model is exported with Brevitas' QONNX exporter and cleaned with qonnx;
its input is annotated UINT8 (the network takes raw pixels). Every weight
``BipolarQuant`` is built from the *stored* binarized weights (value and
scale) of its layer, not from the latent weights: the stored binarization
need not be sign(latent) (a quantizer may binarize otherwise, e.g. clip
thresholds crossing 0; the latent weights may have changed since), and PyTorch's
eval mode, the QONNX graph and the hardware must all use the stored one. The model is the checkpoint's in float32 (a float64-trained one is
cast; its stored binarized weights +-2^k are exact in float32). Before the file
is put in place, the QONNX graph is executed on test images and its
predictions must equal PyTorch's, image for image; otherwise export fails and
leaves no ``model.onnx`` behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from flow import data as datasets
from flow.errors import FlowError
from flow.graphs import execute_batched, predictions
from flow.models import build_model
from flow.train import load_checkpoint, load_model_state


def load_trained_model(checkpoint_path: Path) -> tuple[torch.nn.Module, dict]:
    """Rebuild the network of a checkpoint with its trained weights, in eval mode."""
    if not checkpoint_path.exists():
        raise FlowError(f"{checkpoint_path}: no checkpoint; run `make train` first")
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint["config"]
    try:
        model = build_model(config["model"], config["quant"], tuple(checkpoint["image_shape"]), checkpoint["num_classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FlowError(f"{checkpoint_path}: its config cannot describe a network ({type(exc).__name__}: {exc})") from None
    load_model_state(model, checkpoint, checkpoint_path)
    model.float().eval()
    return model, checkpoint


def latent_weights_from_stored_binarization(model: torch.nn.Module) -> None:
    """Set each layer's latent weights to its stored binarized weights (+-scale).

    Brevitas exports a weight quantizer as ``BipolarQuant(latent, scale)``,
    i.e. sign(latent) * scale; with the latent weights replaced by the stored
    +-scale values (never 0: scale > 0) that node computes exactly the stored
    binarization. Layers whose quantizer stores nothing (Brevitas' own ``ste``)
    binarize sign(latent) in eval mode, which the graph computes already.
    """
    from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer

    with torch.no_grad():
        for layer in model.modules():
            stored = getattr(getattr(layer.weight_quant, "tensor_quant", None), "binarized", None) \
                if isinstance(layer, QuantWeightBiasInputOutputLayer) else None
            if stored is not None and stored.stored:
                layer.weight.copy_(stored.value)


def torch_predictions(model: torch.nn.Module, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate(
            [model(torch.from_numpy(images[i : i + batch]).float()).argmax(1).numpy() for i in range(0, len(images), batch)]
        )


def export_qonnx_model(model: torch.nn.Module, image_shape: tuple[int, ...], path: Path) -> None:
    """Brevitas QONNX export + qonnx cleanup, input annotated as UINT8 pixels."""
    from brevitas.export import export_qonnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    export_qonnx(model, input_t=torch.zeros(1, *image_shape), export_path=str(path))
    qonnx_model = cleanup_model(ModelWrapper(str(path)))
    qonnx_model.set_tensor_datatype(qonnx_model.graph.input[0].name, DataType["UINT8"])
    qonnx_model.save(str(path))


def export(checkpoint_path: Path, onnx_path: Path, check_images: int = 500) -> dict:
    """Export ``checkpoint_path`` to ``onnx_path``; execute it on ``check_images`` test images."""
    from qonnx.core.modelwrapper import ModelWrapper

    model, checkpoint = load_trained_model(checkpoint_path)
    latent_weights_from_stored_binarization(model)
    image_shape = tuple(checkpoint["image_shape"])
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter may write a weights side file next to its output: work in
    # a temporary directory and move only the final, self-contained model.
    with tempfile.TemporaryDirectory(dir=onnx_path.parent, prefix=".export-") as work_dir:
        tmp = Path(work_dir) / onnx_path.name
        export_qonnx_model(model, image_shape, tmp)
        dataset = datasets.load(checkpoint["config"]["dataset"])
        images = dataset.test_images[:check_images]
        expected = torch_predictions(model, images)
        actual = predictions(execute_batched(ModelWrapper(str(tmp)), images, progress="export check: QONNX model"))
        mismatches = np.flatnonzero(actual != expected)
        if len(mismatches):
            raise FlowError(
                f"export check failed: the QONNX model predicts differently from PyTorch on "
                f"{len(mismatches)} of {len(images)} test images (first: image {mismatches[0]}, "
                f"PyTorch {expected[mismatches[0]]}, QONNX {actual[mismatches[0]]})"
            )
        os.replace(tmp, onnx_path)
    print(f"exported {onnx_path}: QONNX == PyTorch on {len(images)} test images")
    return {"onnx": str(onnx_path), "checked_images": len(images)}
