"""Compare the binary quantizers: equal training budget, several seeds, one report.

``compare()`` trains every quantizer (all of ``flow.quant.QUANTIZERS``) with
every seed through :func:`flow.train.train` (one run directory each under
``out_root``, so an interrupted comparison resumes run by run), in ``jobs``
parallel processes on ``device``, then writes

- ``out_root/compare.json``: every run's history and the summary,
- the results block ``<!-- NAME:begin -->`` .. ``<!-- NAME:end -->`` of
  ``docs/quantizers.md`` (NAME: ``--name``, e.g. ``compare-sfc``), the rest of
  the document left as it is: per quantizer the mean test accuracy with its
  95 % confidence interval (Student t over the seeds), and the paired
  difference to ``ste`` (same seed = same initialization and data order) with
  its 95 % interval and the two-sided paired t-test's p-value,
- plots next to it: accuracy curves, each estimator's surrogate gradient
  against x, and the clip thresholds t1/t2 and clipped fractions during training.

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

from flow.train import TrainConfig, adam, atomic_write_text, clip_latent_weights, train

from flow.quant import QUANTIZERS as REGISTRY

QUANTIZERS = tuple(REGISTRY)
DOC = Path("docs/quantizers.md")
SIGNIFICANCE = 0.05


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
    epochs: int = 30,
    seeds: int = 5,
    device: str = "cpu",
    jobs: int = 1,
    name: str = "compare",
    reference: str = "ste",
    **train_options,
) -> dict:
    """``reference``: the quantizer every other one is paired with (seed by seed);
    ``train_options``: further TrainConfig fields for every run (e.g. ``master_weights="int8"``)."""
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
                TrainConfig(model=model, dataset=dataset, quant=quant, epochs=epochs, seed=seed, **train_options),
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
        "name": name,
        "command": command_line(),
        "train_options": train_options,
        "model": model,
        "dataset": dataset,
        "epochs": epochs,
        "seeds": seeds,
        "quantizers": list(quantizers),
        "device": device,
        "jobs": jobs,
        "wall_seconds": time.time() - started,
        "reference": reference,
        "summary": summarize(histories, quantizers, seeds, reference),
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


def command_line() -> str:
    import sys

    return "python -m flow " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("flow", "__main__.py")) else ""


def plot_paths(doc: Path, name: str) -> dict[str, Path]:
    """The report's plots: its own accuracy and clipping curves; the surrogate gradients are shared."""
    paths = {kind: doc.parent / f"quantizers_{name}_{kind}.png" for kind in ("accuracy", "clipping")}
    return {**paths, "gradients": doc.parent / "quantizers_gradients.png"}


def write_report(report: dict, doc: Path = DOC) -> None:
    """Plots next to ``doc`` and its results block, from a ``compare.json`` report."""
    histories, quantizers = report["runs"], tuple(report["quantizers"])
    name = report.get("name", "compare")
    paths = plot_paths(doc, name)
    title = f"{report['model'].upper()}-W1A1 on {report['dataset']}"
    plot_accuracy(histories, quantizers, paths["accuracy"], title)
    plot_surrogate_gradients(paths["gradients"])
    plot_clipping(histories, paths["clipping"])
    write_block(doc, name, results_markdown(report, paths))


def mean_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for one value or no spread)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan")
    sem = statistics.stdev(values) / len(values) ** 0.5
    return mean, float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * sem)


def paired_difference(values: list[float], reference: list[float]) -> dict:
    """``values - reference`` seed by seed: mean, 95 % half-width, two-sided paired t-test p-value."""
    from scipy import stats

    differences = [v - r for v, r in zip(values, reference)]
    mean, half_width = mean_interval(differences)
    if len(differences) < 2 or statistics.pstdev(differences) == 0:
        p_value = float("nan") if len(differences) < 2 else (1.0 if mean == 0 else 0.0)
    else:
        p_value = float(stats.ttest_rel(values, reference).pvalue)
    return {"differences": differences, "mean": mean, "ci95": half_width, "p_value": p_value}


def summarize(histories: dict, quantizers: tuple[str, ...], seeds: int, reference: str = "ste") -> dict:
    summary = {}
    accuracies = {quant: [100 * histories[f"{quant}/seed{s}"][-1]["test_accuracy"] for s in range(seeds)]
                  for quant in quantizers}
    for quant in quantizers:
        runs = [histories[f"{quant}/seed{s}"] for s in range(seeds)]
        # epoch 1 includes start-up (data to device, allocator warm-up)
        seconds = [h["seconds"] for history in runs for h in history[1:]] or [h["seconds"] for h in runs[0]]
        mean, half_width = mean_interval(accuracies[quant])
        summary[quant] = {
            "accuracies": accuracies[quant],
            "mean": mean,
            "ci95": half_width,
            "std": statistics.stdev(accuracies[quant]) if seeds > 1 else 0.0,
            "seconds_per_epoch": statistics.median(seconds),
        }
        if quant != reference and reference in accuracies:
            summary[quant]["paired"] = paired_difference(accuracies[quant], accuracies[reference])
    return summary


def results_markdown(report: dict, paths: dict[str, Path]) -> str:
    summary, reference = report["summary"], report.get("reference", "ste")
    options = "".join(f", {k} {v}" for k, v in report.get("train_options", {}).items())
    lines = [
        f"{report['model'].upper()}-W1A1 on {report['dataset']}, {report['epochs']} epochs, "
        f"{report['seeds']} seeds (0..{report['seeds'] - 1}){options}, device {report['device']}, "
        f"{report['jobs']} parallel runs; wall time {report['wall_seconds'] / 60:.1f} min.",
        *([f"Command: `{report['command']}`"] if report.get("command") else []),
        "",
        f"| quantizer | test accuracy (mean, 95 % CI, %) | vs {reference}, paired (pp, 95 % CI) | p (paired t) | "
        "per seed (%) | s / epoch (median) |",
        "|---|---|---|---|---|---|",
    ]
    for quant, row in summary.items():
        paired = row.get("paired")
        delta = f"{paired['mean']:+.2f} +- {paired['ci95']:.2f}" if paired else ""
        if paired:
            mark = " *" if paired["p_value"] < SIGNIFICANCE else ""
            p_value = f"{paired['p_value']:.3f}{mark}"
        else:
            p_value = ""
        per_seed = ", ".join(f"{a:.2f}" for a in row["accuracies"])
        lines.append(
            f"| {quant} | {row['mean']:.2f} +- {row['ci95']:.2f} | {delta} | {p_value} | {per_seed} | "
            f"{row['seconds_per_epoch']:.2f} |"
        )
    significant = [q for q, row in summary.items() if row.get("paired", {}).get("p_value", 1.0) < SIGNIFICANCE]
    lines += [
        "",
        f"\\* p < {SIGNIFICANCE}: the paired difference to {reference} is significant "
        f"({', '.join(significant) if significant else 'none here'}); every other difference is not.",
        "",
        *[f"![{kind}]({path.name})" for kind, path in paths.items() if path.exists()],
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
    for quant in ("fourier", "dft", "wavelet"):
        for epoch in (1, 10):
            ax.plot(x, surrogate_gradient(quant, x, epoch, 10), label=f"{quant}, epoch {epoch} of 10")
    ax.set(xlabel="x", ylabel="d binarize(x) / dx used in backward", title="surrogate gradients of sign")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_clipping(histories: dict, path: Path) -> None:
    """Per clip quantizer (seed 0): t1/t2 per layer and the fraction of weights clipped, per epoch."""
    clipped = {
        run.rsplit("/", 1)[0]: history
        for run, history in histories.items()
        if run.endswith("/seed0") and "clip" in history[0]
    }
    if not clipped:
        return
    plt = _pyplot()
    fig, axes = plt.subplots(2, len(clipped), figsize=(6 * len(clipped), 8), squeeze=False)
    for column, (quant, history) in enumerate(clipped.items()):
        ax_t, ax_f = axes[0][column], axes[1][column]
        epochs = [h["epoch"] for h in history]
        for i, layer in enumerate(history[0]["clip"]):
            ax_t.plot(epochs, [h["clip"][layer]["t2"] for h in history], marker="o", color=f"C{i}", label=layer)
            ax_t.plot(epochs, [h["clip"][layer]["t1"] for h in history], marker="x", ls="--", color=f"C{i}")
            ax_f.plot(epochs, [100 * h["clip"][layer]["clipped_fraction"] for h in history], marker="o", label=layer)
        ax_t.axhline(1.0, color="grey", linestyle=":")
        ax_t.axhline(-1.0, color="grey", linestyle=":")
        ax_t.set(xlabel="epoch", ylabel="t1 (dashed), t2", title=f"{quant}, seed 0: clip thresholds (channel mean)")
        ax_f.set(xlabel="epoch", ylabel="weights clipped (%)", title=f"{quant}, seed 0: clipped fraction per layer")
        for ax in (ax_t, ax_f):
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
    optimizer = adam(model.parameters(), lr=1e-3)
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
