"""Compare the binary quantizers: equal training budget, several seeds, one report.

``compare()`` trains every quantizer (STE, ApproxSign, DSQ, fourier,
fourier+fit, clip, fourier+clip) with every seed through :func:`flow.train.train`
(one run directory each under ``out_root``, so an interrupted comparison
resumes run by run), in ``jobs`` parallel processes on ``device``, then writes

- ``out_root/compare.json``: every run's history and the summary,
- the results block of ``docs/quantizers.md`` (mean +- std test accuracy and
  time per epoch per quantizer) between ``<!-- compare:begin -->`` and
  ``<!-- compare:end -->``, the rest of the document left as it is,
- plots next to it: accuracy curves, each estimator's surrogate gradient
  against x, and the clip thresholds t1/t2 during training.

A run directory whose training is complete is not trained again, so the same
command run a second time (for example here, after training on a GPU machine
without matplotlib and copying ``out_root`` back) only writes the report.

``timing()`` measures the backward overhead side by side in one process
(per-epoch training time of TFC and SFC with fourier vs ste, n=50 vs n=9) and
writes its own block (``<!-- timing-cpu:begin -->`` .. ``<!-- timing-cpu:end -->``,
or ``timing-cuda`` with ``device="cuda"``).

Training imports neither finn nor qonnx, so this runs on a machine with only
torch, numpy and brevitas (and the dataset files).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

from flow.train import TrainConfig, atomic_write_text, clip_latent_weights, train

QUANTIZERS = ("ste", "approxsign", "dsq", "fourier", "fourier+fit", "clip", "fourier+clip")
DOC = Path("docs/quantizers.md")


def run_dir(out_root: Path, quant: str, seed: int) -> Path:
    return out_root / f"{quant}-seed{seed}"


def _train_one(out_dir: Path, config: TrainConfig, device: str, threads: int) -> dict:
    """One run in a worker process (no progress bars: several run at once)."""
    os.environ["CI"] = "true"
    torch.set_num_threads(threads)
    return train(out_dir, config, device)


def compare(
    out_root: Path,
    doc: Path = DOC,
    quantizers: tuple[str, ...] = QUANTIZERS,
    model: str = "sfc",
    dataset: str = "fashion-mnist",
    epochs: int = 10,
    seeds: int = 3,
    device: str = "cpu",
    jobs: int = 1,
) -> dict:
    from flow.quant import get_quantizers

    for quant in quantizers:
        get_quantizers(quant)
    out_root.mkdir(parents=True, exist_ok=True)
    runs = [(quant, seed) for seed in range(seeds) for quant in quantizers]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    started = time.time()
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {
            (quant, seed): pool.submit(
                _train_one,
                run_dir(out_root, quant, seed),
                TrainConfig(model=model, dataset=dataset, quant=quant, epochs=epochs, seed=seed),
                device,
                threads,
            )
            for quant, seed in runs
        }
        results = {}
        for (quant, seed), future in futures.items():
            results[(quant, seed)] = future.result()
            print(f"{quant} seed {seed}: test {100 * results[(quant, seed)]['test_accuracy']:.2f}%", flush=True)
    histories = {f"{quant}/seed{seed}": result["history"] for (quant, seed), result in results.items()}
    report = {
        "model": model,
        "dataset": dataset,
        "epochs": epochs,
        "seeds": seeds,
        "quantizers": list(quantizers),
        "device": device,
        "jobs": jobs,
        "wall_seconds": time.time() - started,
        "summary": summarize(histories, quantizers, seeds),
        "runs": histories,
    }
    atomic_write_text(out_root / "compare.json", json.dumps(report, indent=2))
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        # e.g. a GPU machine with only torch: train there, write the report where matplotlib is
        print(f"matplotlib is not installed: wrote {out_root / 'compare.json'} only; "
              f"write the report from it with `flow compare --report-only --out {out_root}`")
        return report
    write_report(report, doc)
    return report


def write_report(report: dict, doc: Path = DOC) -> None:
    """Plots next to ``doc`` and its results block, from a ``compare.json`` report."""
    histories, quantizers = report["runs"], tuple(report["quantizers"])
    title = f"{report['model'].upper()}-W1A1 on {report['dataset']}"
    plot_accuracy(histories, quantizers, doc.parent / "quantizers_accuracy.png", title)
    plot_surrogate_gradients(doc.parent / "quantizers_gradients.png")
    plot_thresholds(histories, doc.parent / "quantizers_thresholds.png")
    write_block(doc, "compare", results_markdown(report))


def summarize(histories: dict, quantizers: tuple[str, ...], seeds: int) -> dict:
    summary = {}
    for quant in quantizers:
        runs = [histories[f"{quant}/seed{s}"] for s in range(seeds)]
        accuracies = [100 * history[-1]["test_accuracy"] for history in runs]
        # epoch 1 includes start-up (data to device, allocator warm-up)
        seconds = [h["seconds"] for history in runs for h in history[1:]] or [h["seconds"] for h in runs[0]]
        summary[quant] = {
            "accuracies": accuracies,
            "mean": statistics.fmean(accuracies),
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "seconds_per_epoch": statistics.median(seconds),
        }
    return summary


def results_markdown(report: dict) -> str:
    summary = report["summary"]
    ste = summary.get("ste")
    lines = [
        f"{report['model'].upper()}-W1A1 on {report['dataset']}, {report['epochs']} epochs, "
        f"{report['seeds']} seeds (0..{report['seeds'] - 1}), device {report['device']}, {report['jobs']} parallel runs; "
        f"wall time {report['wall_seconds'] / 60:.1f} min.",
        "",
        "| quantizer | test accuracy (mean +- std, %) | vs ste (pp) | per seed (%) | s / epoch (median) |",
        "|---|---|---|---|---|",
    ]
    for quant, row in summary.items():
        delta = f"{row['mean'] - ste['mean']:+.2f}" if ste and quant != "ste" else ""
        per_seed = ", ".join(f"{a:.2f}" for a in row["accuracies"])
        lines.append(
            f"| {quant} | {row['mean']:.2f} +- {row['std']:.2f} | {delta} | {per_seed} | {row['seconds_per_epoch']:.2f} |"
        )
    lines += [
        "",
        "![accuracy curves](quantizers_accuracy.png)",
        "![surrogate gradients](quantizers_gradients.png)",
        "![clip thresholds](quantizers_thresholds.png)",
    ]
    return "\n".join(lines)


def write_block(doc: Path, name: str, body: str) -> None:
    """Replace (or append) the block ``<!-- name:begin -->`` .. ``<!-- name:end -->`` of ``doc``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(doc, text)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)
    os.replace(tmp, path)


def plot_accuracy(histories: dict, quantizers: tuple[str, ...], path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for quant in quantizers:
        curves = np.array(
            [[100 * h["test_accuracy"] for h in history] for run, history in histories.items()
             if run.rsplit("/", 1)[0] == quant]
        )
        epochs = np.arange(1, curves.shape[1] + 1)
        ax.plot(epochs, curves.mean(0), marker="o", label=quant)
        ax.fill_between(epochs, curves.min(0), curves.max(0), alpha=0.15)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{title}: mean over seeds (band: min..max)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def surrogate_gradient(quant: str, x: torch.Tensor, epoch: int = 1, epochs: int = 1) -> np.ndarray:
    """d(quantizer output)/dx of ``quant``'s activation quantizer at the given epoch of a schedule."""
    from brevitas.nn import QuantIdentity

    from flow.quant import get_quantizers, start_epoch

    layer = QuantIdentity(act_quant=get_quantizers(quant).act, features=x.numel())
    start_epoch(layer, epoch, epochs)
    x = x.detach().clone().requires_grad_(True)
    layer(x.reshape(1, -1)).sum().backward()
    return x.grad.numpy()


def plot_surrogate_gradients(path: Path) -> None:
    plt = _pyplot()
    x = torch.linspace(-1.5, 1.5, 601)
    fig, ax = plt.subplots(figsize=(8, 5))
    for quant in ("ste", "approxsign", "dsq"):
        ax.plot(x, surrogate_gradient(quant, x), label=quant)
    for epoch, n in ((1, 9), (10, 18)):
        ax.plot(x, surrogate_gradient("fourier", x, epoch, 10), label=f"fourier, n={n} (epoch {epoch} of 10)")
    ax.set(xlabel="x", ylabel="d binarize(x) / dx used in backward", title="surrogate gradients of sign")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_thresholds(histories: dict, path: Path) -> None:
    clipped = {
        run.rsplit("/", 1)[0]: history
        for run, history in histories.items()
        if run.endswith("/seed0") and "clip_thresholds" in history[0]
    }
    if not clipped:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(clipped), figsize=(6 * len(clipped), 4.5), squeeze=False)
    for ax, (quant, history) in zip(axes[0], clipped.items()):
        epochs = [h["epoch"] for h in history]
        for layer in history[0]["clip_thresholds"]:
            t1 = [h["clip_thresholds"][layer][0] for h in history]
            t2 = [h["clip_thresholds"][layer][1] for h in history]
            (line,) = ax.plot(epochs, t2, marker="o", label=layer)
            ax.plot(epochs, t1, marker="o", color=line.get_color())
        ax.axhline(1.0, color="grey", linestyle=":")
        ax.axhline(-1.0, color="grey", linestyle=":")
        ax.set(xlabel="epoch", ylabel="t1 (lower), t2 (upper)", title=f"{quant}, seed 0: clip thresholds per layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    _save(fig, path)


def _fixed_terms_quantizers(n: int):
    from flow.quant import BinaryQuantizers, get_quantizers

    fourier = get_quantizers("fourier")
    return BinaryQuantizers(fourier.weight.let(terms=(n, n)), fourier.act.let(terms=(n, n)), f"fourier n={n}")


def _epoch_seconds(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 100) -> float:
    """One training epoch exactly as flow.train runs it (forward, loss, backward, Adam, clip)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for begin in range(0, len(images), batch_size):
        loss = torch.nn.functional.cross_entropy(model(images[begin : begin + batch_size]), labels[begin : begin + batch_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        clip_latent_weights(model)
    if images.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def timing(doc: Path = DOC, dataset: str = "mnist5k", rounds: int = 9, device: str = "cpu") -> dict:
    """Per-epoch training time, side by side in this process; the best of interleaved rounds
    (the least disturbed by other work on the machine, which only ever adds time)."""
    import math

    from flow import data as datasets
    from flow.models import MLP_HIDDEN, BinaryMLP
    from flow.quant import get_quantizers

    data = datasets.load(dataset)
    images = torch.from_numpy(data.train_images).float().to(device)
    labels = torch.from_numpy(data.train_labels).to(device)
    variants = {
        "ste": get_quantizers("ste"),
        "fourier": get_quantizers("fourier"),
        "fourier n=9": _fixed_terms_quantizers(9),
        "fourier n=50": _fixed_terms_quantizers(50),
    }
    results = {}
    for model_name in ("tfc", "sfc"):
        models = {}
        for name, quant in variants.items():
            torch.manual_seed(0)
            models[name] = BinaryMLP(MLP_HIDDEN[model_name], quant, math.prod(data.image_shape), data.num_classes).to(device)
        seconds = {name: [] for name in variants}
        _epoch_seconds(models["ste"], images, labels)  # warm-up
        for _ in range(rounds):
            for name, model in models.items():
                seconds[name].append(_epoch_seconds(model, images, labels))
        best = {name: min(s) for name, s in seconds.items()}
        results[model_name] = {
            "seconds_per_epoch": best,
            "fourier / ste": best["fourier"] / best["ste"],
            "n=50 / n=9": best["fourier n=50"] / best["fourier n=9"],
        }
        print(
            f"{model_name}: fourier / ste = {results[model_name]['fourier / ste']:.3f}, "
            f"n=50 / n=9 = {results[model_name]['n=50 / n=9']:.3f}  "
            + ", ".join(f"{k} {v:.3f} s" for k, v in best.items()),
            flush=True,
        )
    lines = [
        f"Per-epoch training time on {dataset} ({len(images)} images, batch 100), device {device}, "
        f"{torch.get_num_threads()} CPU threads, best of {rounds} interleaved rounds in one process:",
        "",
        "| model | ste (s) | fourier (s) | fourier / ste | fourier n=9 (s) | fourier n=50 (s) | n=50 / n=9 |",
        "|---|---|---|---|---|---|---|",
    ]
    for model_name, r in results.items():
        s = r["seconds_per_epoch"]
        lines.append(
            f"| {model_name} | {s['ste']:.3f} | {s['fourier']:.3f} | {r['fourier / ste']:.3f} | "
            f"{s['fourier n=9']:.3f} | {s['fourier n=50']:.3f} | {r['n=50 / n=9']:.3f} |"
        )
    write_block(doc, f"timing-{device.split(':')[0]}", "\n".join(lines))
    return results
