"""A model trained elsewhere: Brevitas' own bnn_pynq TFC/SFC/LFC/CNV, briefly trained, exported to QONNX.

    python examples/bnn_pynq.py tfc_1w1a --dataset mnist5k --steps 200 --out tfc_1w1a.onnx

What a FINN user brings: the network from ``brevitas_examples.bnn_pynq``'s
model factory, trained on images scaled to 0..1 (torchvision's ToTensor, as
bnn_pynq's trainer feeds them), exported exactly as that trainer's
``export_onnx`` does: the model on the CPU in eval mode,
``export_qonnx(model, one training image, path)``. The training here is a
short Adam run on one of bnn-flow's datasets (cross-entropy, weights clipped
to [-1, 1] after each step as bnn_pynq's trainer does), enough for
non-trivial batch-norm statistics and better-than-chance accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from brevitas.export import export_qonnx
from brevitas_examples.bnn_pynq.models import model_with_cfg

from flow import data


def train_briefly(model, images: np.ndarray, labels: np.ndarray, steps: int, batch: int, lr: float, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(images).float() / 255  # ToTensor: pixels / 255
    y = torch.from_numpy(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    order = torch.randperm(len(x), generator=generator)
    for step in range(steps):
        index = order[(step * batch) % len(x) :][:batch]
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clip_weights(-1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", help="bnn_pynq configuration, e.g. tfc_1w1a, sfc_1w1a, lfc_1w1a, cnv_1w1a, tfc_2w2a, cnv_1w2a")
    parser.add_argument("--dataset", default="mnist5k", help="bnn-flow dataset (CNV: a 3-channel 32x32 one, e.g. fashion-mnist32-rgb:1000:100)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    model, _ = model_with_cfg(args.network, pretrained=False)
    dataset = data.load(args.dataset)
    train_briefly(model, dataset.train_images, dataset.train_labels, args.steps, args.batch, args.lr, args.seed)
    model.eval()
    with torch.no_grad():
        scores = model(torch.from_numpy(dataset.test_images).float() / 255)
    accuracy = float((scores.argmax(1).numpy() == dataset.test_labels).mean())
    sample = torch.from_numpy(dataset.train_images[:1]).float() / 255
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    export_qonnx(model, sample, args.out)
    print(f"{args.network}: {accuracy:.2%} on {len(dataset.test_labels)} {dataset.name} test images (pixels / 255); wrote {args.out}")


if __name__ == "__main__":
    main()
