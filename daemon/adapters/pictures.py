"""Pictures of what the instrument plays: ``canne render --spectrogram out.png``.

matplotlib is not a dependency of the runtime (it comes with the ``train`` extra); it
is imported only when a picture is asked for, and its absence is one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.errors import CanneError

__all__ = ["check_png", "spectrogram_png", "spectrogram_db"]

FLOOR_DB = 90.0  # shown range below the loudest bin: quieter is drawn as the floor
F_MIN = 30.0  # Hz, bottom of the log-frequency axis


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise CanneError("--spectrogram needs matplotlib: pip install matplotlib "
                         "(or the 'train' extra: pip install 'canne-live[train]')") from None
    return plt


def check_png(path) -> Path:
    """Refuse a picture path that cannot be written, before anything is rendered."""
    p = Path(path)
    if p.suffix.lower() != ".png":
        raise CanneError(f"--spectrogram {path}: the picture must be a .png file")
    if not p.parent.is_dir():
        raise CanneError(f"--spectrogram {path}: folder {p.parent} does not exist")
    _pyplot()
    return p


def spectrogram_db(audio: np.ndarray, sample_rate: int, n_fft: int = 4096, hop: int = 512):
    """(times s, freqs Hz, level dB re the loudest bin, floored at -FLOOR_DB)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    n = 1 + (x.size - n_fft) // hop
    win = np.hanning(n_fft)
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop][:n] * win
    mag = np.abs(np.fft.rfft(frames, axis=1)).T
    db = 20.0 * np.log10(mag + 1e-12)
    db -= db.max()
    np.maximum(db, -FLOOR_DB, out=db)
    times = (np.arange(n) * hop + n_fft / 2) / sample_rate
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    return times, freqs, db


def spectrogram_png(path, audio: np.ndarray, sample_rate: int, *, title: str = "") -> Path:
    """Draw the spectrogram of ``audio`` (log-frequency axis, dB with a floor) into ``path``."""
    plt = _pyplot()
    t, f, db = spectrogram_db(audio, sample_rate)
    keep = f >= F_MIN
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    try:
        mesh = ax.pcolormesh(t, f[keep], db[keep], shading="nearest", cmap="magma", vmin=-FLOOR_DB, vmax=0.0)
        ax.set_yscale("log")
        ax.set_ylim(F_MIN, sample_rate / 2)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("frequency (Hz)")
        if title:
            ax.set_title(title)
        fig.colorbar(mesh, ax=ax, label=f"dB re loudest (floor -{FLOOR_DB:g})")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return Path(path)
