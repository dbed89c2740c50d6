"""Shared helpers for the training tests: a tiny, fast, seeded synthetic corpus."""

from __future__ import annotations

from pathlib import Path

from training.corpus import build_corpus
from training.stft import StftSettings

TINY_STFT = StftSettings(sample_rate=8000, n_fft=256, hop_length=64)
TINY_MODEL = {"encoder_widths": [48, 24], "latent_dim": 4, "decoder_widths": [24, 48]}


def tiny_corpus(path: Path, *, n_patches: int = 10, seed: int = 0):
    """A synthetic one-octave corpus, 8 kHz, 256/64 STFT (129 bins), short notes."""
    return build_corpus(path, source="synth", stft=TINY_STFT, n_patches=n_patches,
                        note_s=0.25, tail_s=0.1, seed=seed, progress=False)
