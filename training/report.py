"""PNG report of a training run: loss curves, reconstructions, latent histograms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.corpus import load_corpus
from training.errors import TrainingError


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(history: list[dict], path: Path) -> None:
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    tr = [(h["epoch"], h["train_loss"]) for h in history if np.isfinite(h["train_loss"])]
    if tr:
        a.plot(*zip(*tr), label="train loss")
    a.plot(ep, [h["val_sc_mse"] for h in history], label="validation SC (MSE form)")
    a.set_yscale("log")
    a.set_xlabel("epoch")
    a.set_title("loss and validation spectral convergence")
    a.legend()
    a.grid(alpha=0.3)
    b.plot(ep, [h["val_sc_db"] for h in history], color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel("dB")
    b.set_title("validation SC, 20 log10 ||X - X^|| / ||X||")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reconstructions(x: np.ndarray, y: np.ndarray, sample_rate: int, path: Path,
                         titles: list[str]) -> None:
    plt = _plt()
    n = len(x)
    freqs = np.linspace(0, sample_rate / 2000.0, x.shape[1])
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.2 * n), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.plot(freqs, 20 * np.log10(np.maximum(x[i], 1e-5)), lw=0.8, label="validation frame")
        ax.plot(freqs, 20 * np.log10(np.maximum(y[i], 1e-5)), lw=0.8, alpha=0.8,
                label="reconstruction")
        sc = np.sum((x[i] - y[i]) ** 2) / max(np.sum(x[i] ** 2), 1e-30)
        ax.set_title(f"{titles[i]}   SC (MSE form) {sc:.3f}", fontsize=9)
        ax.set_ylim(-100, 5)
        ax.set_xlim(0, min(freqs[-1], 11.0))
        ax.set_ylabel("dB")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("kHz")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latents(z: np.ndarray, lo, hi, default, path: Path) -> None:
    plt = _plt()
    d = z.shape[1]
    cols = 4
    rows = (d + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.4 * rows), squeeze=False)
    for i in range(rows * cols):
        ax = axes[i // cols, i % cols]
        if i >= d:
            ax.axis("off")
            continue
        ax.hist(z[:, i], bins=60, color="C0", alpha=0.8)
        ax.axvline(lo[i], color="C3", lw=1)
        ax.axvline(hi[i], color="C3", lw=1)
        ax.axvline(default[i], color="k", lw=1, ls="--")
        ax.set_title(f"z[{i}]", fontsize=9)
    fig.suptitle("encoded training frames (red: 1st/99th percentile, dashed: median)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(run: str | Path, out: str | Path | None = None, *, corpus=None,
                 n_frames: int = 6, seed: int = 0) -> list[Path]:
    """Write ``loss.png``, ``reconstructions.png`` and ``latents.png``; returns their paths."""
    import torch

    from training.export import encode_frames, latent_stats
    from training.train import load_checkpoint

    run = Path(run)
    log = run / "log.json"
    if not log.is_file():
        raise TrainingError(f"{run} has no log.json; pass the directory given to "
                            "'canne-train train --out'")
    out = Path(out) if out else run / "report"
    out.mkdir(parents=True, exist_ok=True)
    history = json.loads(log.read_text())
    model, ck = load_checkpoint(run)
    corpus = load_corpus(corpus or ck["train_config"]["corpus"])
    rng = np.random.default_rng(seed)
    files = [out / "loss.png", out / "reconstructions.png", out / "latents.png"]
    plot_loss(history, files[0])

    va = corpus.split_index("val")
    pick = np.sort(rng.choice(va, min(n_frames, len(va)), replace=False))
    x = np.asarray(corpus.frames[pick])
    with torch.no_grad():
        y = model(torch.as_tensor(x)).numpy()
    names = {p["id"]: p["name"] for p in corpus.meta["patches"]}
    titles = [f"{names[int(corpus.patch[i])]} frame {int(i)}" for i in pick]
    plot_reconstructions(x, y, corpus.stft.sample_rate, files[1], titles)

    tr = corpus.split_index("train")
    if len(tr) > 50000:
        tr = np.sort(rng.choice(tr, 50000, replace=False))
    z = encode_frames(model, corpus.frames[tr])
    st = latent_stats(z)
    plot_latents(z, st["latent_min"], st["latent_max"], st["latent_default"], files[2])  # median
    return files
