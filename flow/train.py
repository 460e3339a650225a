"""Train: Brevitas quantization-aware training of a binarized network.

Writes into the run directory:

- ``checkpoint.pt``: model, optimizer and scheduler state plus the run's
  config and history, written atomically at the end of every epoch. A killed
  run started again with the same config resumes from it (losing at most the
  epoch in progress); a finished run is not trained again.
- ``train_metrics.json``: per-epoch history and the final ``test_accuracy``.
- ``training_curve.png``: loss and accuracy per epoch.

Determinism: the data order and dropout masks of epoch ``e`` come from
generators seeded with ``(seed, e)``, so a resumed run computes exactly what
an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from brevitas.nn import QuantLinear
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flow import data as datasets
from flow.errors import FlowError
from flow.models import build_model


@dataclass(frozen=True)
class TrainConfig:
    model: str = "tfc"
    dataset: str = "mnist5k"
    quant: str = "ste"
    epochs: int = 50
    batch_size: int = 100
    lr: float = 0.02
    weight_decay: float = 0.0
    seed: int = 0


def evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).float()
            correct += int((model(x).argmax(1).numpy() == labels[start : start + batch_size]).sum())
    return correct / len(images)


def clip_latent_weights(model: torch.nn.Module) -> None:
    """BinaryConnect: keep latent weights in [-1, 1], where sign() still reacts to updates."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, QuantLinear):
                module.weight.clamp_(-1.0, 1.0)


def atomic_torch_save(payload: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise FlowError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], marker="o", label="train")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], marker="o", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def train(out_dir: Path, config: TrainConfig) -> dict:
    """Train (or resume training) into ``out_dir``; return the metrics written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    dataset = datasets.load(config.dataset)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.quant, dataset.image_shape, dataset.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    history: list[dict] = []

    if checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path)
        if checkpoint["config"] != asdict(config):
            raise FlowError(
                f"{checkpoint_path} belongs to another run ({checkpoint['config']}); "
                "choose another OUT directory or delete it"
            )
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        history = checkpoint["history"]
        if history:
            print(f"resuming {checkpoint_path} after epoch {history[-1]['epoch']} of {config.epochs}")

    train_images = torch.from_numpy(dataset.train_images).float()
    train_labels = torch.from_numpy(dataset.train_labels)
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=os.environ.get("CI") == "true",
    )
    with progress:
        task = progress.add_task(f"{config.model}/{config.quant}", total=config.epochs * steps_per_epoch, status="")
        progress.update(task, completed=len(history) * steps_per_epoch)
        for epoch in range(len(history) + 1, config.epochs + 1):
            start = time.time()
            model.train()
            order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
            torch.manual_seed(config.seed * 100003 + epoch)  # dropout masks
            loss_sum, correct = 0.0, 0
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                logits = model(train_images[idx])
                loss = torch.nn.functional.cross_entropy(logits, train_labels[idx])
                if not torch.isfinite(loss):
                    last = f"epoch {history[-1]['epoch']}" if history else "none yet"
                    raise FlowError(
                        f"training diverged: loss is {loss.item()} at epoch {epoch}, batch {step + 1}; "
                        f"last good checkpoint ({last}) kept at {checkpoint_path}; try a lower --lr"
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                clip_latent_weights(model)
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == train_labels[idx]).sum())
                progress.advance(task)
            scheduler.step()
            test_accuracy = evaluate(model, dataset.test_images, dataset.test_labels)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": loss_sum / len(train_images),
                    "train_accuracy": correct / len(train_images),
                    "test_accuracy": test_accuracy,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.time() - start,
                }
            )
            atomic_torch_save(
                {
                    "config": asdict(config),
                    "image_shape": list(dataset.image_shape),
                    "num_classes": dataset.num_classes,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                },
                checkpoint_path,
            )
            progress.update(task, status=f"epoch {epoch}: test {100 * test_accuracy:.2f}%")

    metrics = {
        "config": asdict(config),
        "test_accuracy": history[-1]["test_accuracy"],
        "epochs": len(history),
        "history": history,
    }
    atomic_write_text(out_dir / "train_metrics.json", json.dumps(metrics, indent=2))
    plot_curves(history, out_dir / "training_curve.png", f"{config.model} / {config.quant} on {config.dataset}")
    print(f"test accuracy {100 * metrics['test_accuracy']:.2f}% after {len(history)} epochs -> {out_dir}")
    return metrics
