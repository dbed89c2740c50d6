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
    """Held-out frames and their reconstructions on a log-frequency axis (30 Hz to
    Nyquist, as the ear spreads them), in dB re the frame's peak, floored at -80 dB."""
    plt = _plt()
    n = len(x)
    freqs = np.arange(x.shape[1]) * (sample_rate / 2.0) / (x.shape[1] - 1)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.2 * n), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ref = max(float(x[i].max()), 1e-12)
        ax.semilogx(freqs[1:], np.maximum(20 * np.log10(np.maximum(x[i][1:], 1e-12) / ref), -80), lw=0.8,
                    label="held-out frame")
        ax.semilogx(freqs[1:], np.maximum(20 * np.log10(np.maximum(y[i][1:], 1e-12) / ref), -80), lw=0.8,
                    alpha=0.8, label="reconstruction")
        sc = np.sum((x[i] - y[i]) ** 2) / max(np.sum(x[i] ** 2), 1e-30)
        ax.set_title(f"{titles[i]}   SC (MSE form) {sc:.3f}", fontsize=9)
        ax.set_ylim(-82, 5)
        ax.set_xlim(30, sample_rate / 2.0)
        ax.set_ylabel("dB re peak")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("Hz (log)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _panels(plt, n: int, cols: int, size: tuple[float, float]):
    """A figure with ``n`` panels in rows of ``cols`` (the spare ones hidden): the figure
    and ``[(i, axes)]`` for the ``n`` used ones."""
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for i in range(n, rows * cols):
        axes[i // cols, i % cols].axis("off")
    return fig, [(i, axes[i // cols, i % cols]) for i in range(n)]


def plot_latents(z: np.ndarray, lo, hi, default, path: Path) -> None:
    plt = _plt()
    d = z.shape[1]
    fig, panels = _panels(plt, d, 4, (3.0, 2.4))
    for i, ax in panels:
        ax.hist(z[:, i], bins=60, color="C0", alpha=0.8)
        ax.axvline(lo[i], color="C3", lw=1)
        ax.axvline(hi[i], color="C3", lw=1)
        ax.axvline(default[i], color="k", lw=1, ls="--")
        ax.set_title(f"z[{i}]", fontsize=9)
    fig.suptitle("encoded training frames (red: 1st/99th percentile, dashed: median)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def latent_map(model_dir: str | Path, out: str | Path | None = None, *, steps: int = 48,
               note: float | None = None, floor_db: float = -60.0) -> Path:
    """``latent_map.png`` for an exported model: for each latent neuron, the decoded
    spectrum (log frequency, dB re the map's peak, floored) as that knob sweeps its learned
    range (1st to 99th percentile) with the others at the default; a pitch-conditioned
    model is decoded at ``note`` (default: its reference note). What each knob does, for
    performers; the instrument's own loader decodes it, so it is what plays."""
    from daemon.core.model import DecoderModel

    plt = _plt()
    dec = DecoderModel(model_dir)
    out = Path(out) if out else Path(model_dir) / "latent_map.png"
    note = float(dec.reference_note if note is None else note)
    d = dec.latent_dim
    freqs = np.arange(dec.n_bins) * dec.sample_rate / dec.n_fft
    keep = freqs >= 30.0
    fig, panels = _panels(plt, d, min(4, d), (3.6, 2.6))
    for i, ax in panels:
        pos = np.linspace(dec.latent_min[i], dec.latent_max[i], steps)
        z = np.tile(dec.latent_default, (steps, 1)).astype(np.float32)
        z[:, i] = pos
        if dec.conditioned:
            m = dec.decode_pitched(z, np.full((steps, 1), note, np.float32))
        else:
            m = dec.decode(z)
        db = 20 * np.log10(np.maximum(m[:, keep], 1e-12) / max(float(m.max()), 1e-12))
        ax.pcolormesh(freqs[keep], pos, np.maximum(db, floor_db), shading="auto", cmap="magma",
                      vmin=floor_db, vmax=0)
        ax.set_xscale("log")
        ax.axhline(dec.latent_default[i], color="w", lw=0.6, ls="--")
        ax.set_title(f"knob {i + 1} (neuron {i})", fontsize=9)
        ax.set_xlabel("Hz", fontsize=8)
        ax.tick_params(labelsize=7)
    what = f"at {note:g} (MIDI)" if dec.conditioned else "(unconditioned: the frame the keys transpose)"
    fig.suptitle(f"{Path(model_dir).name}: decoded spectrum as each knob sweeps its range {what}; "
                 f"dB re peak, floor {floor_db:g}; dashed: default", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


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

    from training.train import split_frames

    va = split_frames(corpus, "val", model.cfg)
    pick = np.sort(rng.choice(va, min(n_frames, len(va)), replace=False))
    x = np.asarray(corpus.frames[pick])
    pitch = (torch.as_tensor(corpus.pitch[pick]) if model.conditioned else None)
    with torch.no_grad():
        y = model(torch.as_tensor(x), pitch).numpy()
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
