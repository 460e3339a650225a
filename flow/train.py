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
an uninterrupted one would. Per-epoch schedules of the quantizers (Fourier
terms n, error-fit weight alpha) are set from the epoch number at the start
of every epoch (:func:`flow.quant.start_epoch`), so they resume too.

The checkpoint also holds ``binarized_weights`` (layer name -> the weights as
the layer uses them after binarization, e.g. ``+-alpha``); the weight
quantizers keep the same values in the model state and use them in eval
mode, so inference and export run on exactly these stored binarized weights.
Beside them: the latent weights (in ``model``), ``clip_thresholds`` (layer ->
t1, t2 tensors, one per output channel for ``clip-channel``) and, with int8
master weights, ``master_weights`` (layer -> int8 codes and scale).

Master weights: ``dtype`` float32 (default) or float64 is the dtype the whole
network trains in; ``master_weights="int8"`` keeps the latent weights on a
per-tensor int8 grid with stochastic rounding after every step
(flow.quant.master). Export and the hardware take the float32 cast of the
trained model (FINN works in float32); the stored binarized weights are +-2^k
and survive that cast exactly.

Multi-process: started by ``torchrun --nproc-per-node N`` (``make train
NPROC=N``), each process computes its share of every batch under
DistributedDataParallel (gloo on CPU, nccl on GPU); the gradient average
equals the one-process batch gradient, so the recipe is unchanged. Process 0
evaluates and writes the run directory.
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from brevitas.nn import QuantConv2d, QuantLinear
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from flow import data as datasets
from flow.errors import FlowError
from flow.files import atomic_write_text
from flow.models import build_model
from flow.quant import start_epoch, store_binarized_weights
from flow.quant.clip import CLIP_LR_SCALE, ClipSignWeightQuant, clip_statistics, clip_thresholds
from flow.quant.fit import FIT_LR_SCALE
from flow.quant.master import MASTER_WEIGHTS, master_weight_codes, round_master_weights

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class TrainConfig:
    model: str = "tfc"
    dataset: str = "mnist5k"
    quant: str = "fourier+clip"
    epochs: int = 50
    batch_size: int = 100
    lr: float = 0.02
    weight_decay: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    master_weights: str = "float"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise FlowError(f"unknown dtype '{self.dtype}'; use {' or '.join(DTYPES)}")
        if self.master_weights not in MASTER_WEIGHTS:
            raise FlowError(f"unknown master weights '{self.master_weights}'; use {' or '.join(MASTER_WEIGHTS)}")


def stored_config(checkpoint: dict) -> dict:
    """The checkpoint's config, with the defaults of fields added since it was written."""
    defaults = asdict(TrainConfig())
    return {**{k: defaults[k] for k in ("dtype", "master_weights")}, **checkpoint["config"]}


def evaluate(model: torch.nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    model.eval()
    parameter = next(model.parameters())
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(images[start : start + batch_size]).to(parameter.device, parameter.dtype)
            correct += int((model(x).argmax(1).cpu().numpy() == labels[start : start + batch_size]).sum())
    return correct / len(images)


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def writer(self) -> bool:
        return self.rank == 0


def start_distributed(device: str) -> Distributed:
    """Join the torchrun job described by the environment, if there is one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed()
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "gloo"
    dist.init_process_group(backend)
    return Distributed(dist.get_rank(), world_size, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str, distributed: Distributed) -> torch.device:
    if device == "auto":  # `make train`'s default: CUDA when this machine has it
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FlowError(f"device {device}: no CUDA device available (use --device cpu)")
        return torch.device("cuda", distributed.local_rank) if distributed.active else torch.device(device)
    if device != "cpu":
        raise FlowError(f"unknown device '{device}'; use auto, cpu or cuda")
    return torch.device("cpu")


def clip_latent_weights(model: torch.nn.Module) -> None:
    """BinaryConnect: keep latent weights in [-1, 1], where sign() still reacts to updates."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (QuantLinear, QuantConv2d)):
                module.weight.clamp_(-1.0, 1.0)


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The training's optimizer. Fused: the default (foreach) step's sqrt is ~8x slower on exact
    zeros on CPU, and a surrogate gradient with a narrow support (fourier at large n) leaves most
    weights' second moments at exactly 0 (measured: SFC epochs 15 % slower at n = 50)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def parameter_groups(model: torch.nn.Module, lr: float) -> list[dict]:
    """The network's parameters at ``lr``; the error fits' and clip thresholds' at scaled-down rates.

    The fits' output never reaches the forward pass, only their Jacobian
    reaches backward; at the network's Adam rate their weights grow within an
    epoch to a Jacobian that swamps the series gradient (measured: TFC on
    mnist5k collapses to ~30 %), see docs/quantizers.md. The clip thresholds'
    parameters pass through tanh / sigmoid (flow.quant.clip); Adam's steps of
    ~lr would saturate them within an epoch.
    """
    thresholds = {id(p) for m in model.modules() if isinstance(m, ClipSignWeightQuant) for p in m.parameters(recurse=False)}
    fit, clip, network = [], [], []
    for name, parameter in model.named_parameters():
        (fit if ".error_fit." in name else clip if id(parameter) in thresholds else network).append(parameter)
    groups = [{"params": network, "lr": lr}]
    if fit:
        groups.append({"params": fit, "lr": lr * FIT_LR_SCALE})
    if clip:
        groups.append({"params": clip, "lr": lr * CLIP_LR_SCALE})
    return groups


def atomic_torch_save(payload: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        reason = "no space left on device (disk full)" if isinstance(exc, RuntimeError) or exc.errno == errno.ENOSPC else exc.strerror
        raise FlowError(f"{path}: cannot write the checkpoint: {reason}; the previous checkpoint is kept") from None


CHECKPOINT_KEYS = {"config", "image_shape", "num_classes", "model", "history"}


def load_checkpoint(path: Path) -> dict:
    """A checkpoint written by ``train`` (tensors only, never unpickled code), its keys checked."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise FlowError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None
    missing = CHECKPOINT_KEYS - set(checkpoint) if isinstance(checkpoint, dict) else CHECKPOINT_KEYS
    if missing or not isinstance(checkpoint["config"], dict):
        raise FlowError(
            f"{path}: not a bnn-flow checkpoint (missing {', '.join(sorted(missing or {'config'}))}); "
            "train one with `make train`"
        )
    return checkpoint


def load_model_state(model: torch.nn.Module, checkpoint: dict, path: Path) -> None:
    """The checkpoint's weights into ``model``: one line when they belong to another network."""
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise FlowError(
            f"{path}: its weights do not fit the {checkpoint['config'].get('model')} network its config names "
            f"({detail[:150]}{'...' if len(detail) > 150 else ''})"
        ) from None


def save_figure(fig, title: str, path: Path) -> None:
    """Title, layout and an atomic write of a training figure (a killed run leaves no half PNG)."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def plot_curves(history: list[dict], path: Path, title: str) -> None:
    try:
        import matplotlib
    except ImportError:  # a training-only machine (torch, numpy, brevitas): the metrics say it all
        print(f"matplotlib is not installed: {path.name} not drawn")
        return

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
    save_figure(fig, title, path)


def plot_clipped_fractions(history: list[dict], path: Path, title: str) -> None:
    """Per clip-quantized layer: the fraction of weights clipped and t1 / t2 (channel means) per epoch."""
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax_f, ax_t) = plt.subplots(1, 2, figsize=(11, 4))
    for i, layer in enumerate(history[0]["clip"]):
        ax_f.plot(epochs, [100 * h["clip"][layer]["clipped_fraction"] for h in history], marker="o", label=layer)
        ax_t.plot(epochs, [h["clip"][layer]["t2"] for h in history], marker="o", color=f"C{i}", label=f"{layer} t2")
        ax_t.plot(epochs, [h["clip"][layer]["t1"] for h in history], marker="x", ls="--", color=f"C{i}", label=f"{layer} t1")
    ax_f.set(xlabel="epoch", ylabel="weights clipped (%)", title="clipped fraction per layer")
    ax_t.set(xlabel="epoch", ylabel="threshold (channel mean)", title="t1 (dashed), t2")
    for ax in (ax_f, ax_t):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    save_figure(fig, title, path)


def train(out_dir: Path, config: TrainConfig, device: str = "cpu") -> dict:
    """Train (or resume training) into ``out_dir``; return the metrics written.

    ``device`` (cpu, cuda, cuda:N) is where this process trains; it is not
    part of the run's identity, so a run may resume on another device.
    """
    distributed = start_distributed(device)
    try:
        return _train(out_dir, config, resolve_device(device, distributed), distributed)
    finally:
        if distributed.active:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(out_dir: Path, config: TrainConfig, device: torch.device, distributed: Distributed) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    dataset = datasets.load(config.dataset)
    torch.manual_seed(config.seed)
    model = build_model(config.model, config.quant, dataset.image_shape, dataset.num_classes).to(DTYPES[config.dtype])
    int8_master = config.master_weights == "int8"
    if int8_master:  # the master weights start on their grid too
        round_master_weights(model, torch.Generator().manual_seed(config.seed))
    checkpoint = None
    history: list[dict] = []
    if checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path)
        if stored_config(checkpoint) != asdict(config):
            raise FlowError(
                f"{checkpoint_path} belongs to another run ({checkpoint['config']}); "
                "choose another OUT directory or delete it"
            )
        # Before the optimizer exists: loading re-creates Brevitas' quantizer
        # modules (and with them their parameters, e.g. clip thresholds).
        load_model_state(model, checkpoint, checkpoint_path)
        history = checkpoint["history"]
    model.to(device)
    optimizer = adam(parameter_groups(model, config.lr), config.lr, config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if history and distributed.writer:
            print(f"resuming {checkpoint_path} after epoch {history[-1]['epoch']} of {config.epochs}")

    trainer: torch.nn.Module = model
    if distributed.active:
        # Unused parameters: the error fit is switched off (alpha = 0) in the last epoch.
        trainer = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    train_images = torch.from_numpy(dataset.train_images).to(device, DTYPES[config.dtype])
    train_labels = torch.from_numpy(dataset.train_labels).to(device)
    steps_per_epoch = math.ceil(len(train_images) / config.batch_size)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=os.environ.get("CI") == "true" or not distributed.writer,
    )
    with progress:
        task = progress.add_task(f"{config.model}/{config.quant}", total=config.epochs * steps_per_epoch, status="")
        progress.update(task, completed=len(history) * steps_per_epoch)
        for epoch in range(len(history) + 1, config.epochs + 1):
            start = time.time()
            start_epoch(model, epoch, config.epochs)
            model.train()
            order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(config.seed * 100003 + epoch))
            # dropout masks; other processes see other samples, so other masks
            torch.manual_seed(config.seed * 100003 + epoch + 7919 * distributed.rank)
            # stochastic rounding of int8 master weights: the same draws in every process (same weights)
            rounding = torch.Generator().manual_seed(config.seed * 100003 + epoch + 1)
            totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, correct
            for step in range(steps_per_epoch):
                batch = order[step * config.batch_size : (step + 1) * config.batch_size]
                idx = batch[distributed.rank :: distributed.world_size].to(device)
                logits = trainer(train_images[idx])
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
                if int8_master:
                    round_master_weights(model, rounding)
                with torch.no_grad():
                    totals[0] += loss.detach() * len(idx)
                    totals[1] += (logits.argmax(1) == train_labels[idx]).sum()
                progress.advance(task)
            scheduler.step()
            binarized_weights = store_binarized_weights(model)
            if distributed.active:
                import torch.distributed as dist

                dist.all_reduce(totals)
            if not distributed.writer:
                continue
            test_accuracy = evaluate(model, dataset.test_images, dataset.test_labels)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": float(totals[0]) / len(train_images),
                    "train_accuracy": float(totals[1]) / len(train_images),
                    "test_accuracy": test_accuracy,
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": time.time() - start,
                    # per layer: t1, t2 (channel means) and the fraction of weights clipped
                    **({"clip": stats} if (stats := clip_statistics(model)) else {}),
                }
            )
            atomic_torch_save(
                {
                    "config": asdict(config),
                    "image_shape": list(dataset.image_shape),
                    "num_classes": dataset.num_classes,
                    "model": model.state_dict(),
                    "binarized_weights": binarized_weights,
                    "clip_thresholds": clip_thresholds(model),
                    **({"master_weights": master_weight_codes(model)} if int8_master else {}),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                },
                checkpoint_path,
            )
            progress.update(task, status=f"epoch {epoch}: test {100 * test_accuracy:.2f}%")

    if not distributed.writer:
        return {}
    metrics = {
        "config": asdict(config),
        "test_accuracy": history[-1]["test_accuracy"],
        "epochs": len(history),
        "history": history,
    }
    atomic_write_text(out_dir / "train_metrics.json", json.dumps(metrics, indent=2))
    plot_curves(history, out_dir / "training_curve.png", f"{config.model} / {config.quant} on {config.dataset}")
    if "clip" in history[-1]:
        plot_clipped_fractions(history, out_dir / "clipped_fraction.png", f"{config.model} / {config.quant}")
    print(f"test accuracy {100 * metrics['test_accuracy']:.2f}% after {len(history)} epochs -> {out_dir}")
    return metrics
