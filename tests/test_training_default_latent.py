"""The exported default latent decodes to a clean tone at the reference note."""

import numpy as np
import pytest
import torch

from daemon.core.pitch import estimate_f0
from training.export import tuned_default_latent

SR, N_FFT = 44100, 4096
BIN_HZ = SR / N_FFT


class CombDecoder(torch.nn.Module):
    """z[:, 0] sets f0 = 200 + 100·z0 Hz (harmonic comb), z[:, 1] adds a noise floor."""

    def __init__(self):
        super().__init__()
        self.freqs = torch.arange(N_FFT // 2 + 1, dtype=torch.float32) * BIN_HZ
        self.noise = torch.rand(N_FFT // 2 + 1, generator=torch.Generator().manual_seed(1))

    def forward(self, z):
        f0 = 200.0 + 100.0 * z[:, :1]
        out = torch.zeros(z.shape[0], self.freqs.numel())
        for k in range(1, 16):
            out = out + torch.exp(-0.5 * ((self.freqs - k * f0) / 4.0) ** 2) / k
        return out + z[:, 1:2].clamp(min=0) * self.noise


class Model:
    decoder = CombDecoder()


def cents(f, ref):
    return 1200 * np.log2(f / ref)


def test_picks_clean_frame_at_reference_note(rng):
    z = np.zeros((600, 8), np.float32)
    z[:, 0] = rng.uniform(0.0, 2.0, 600)          # f0 200..400 Hz
    z[:, 1] = rng.choice([0.0, 0.3], 600)         # half of them noisy
    z[:3, 0] = (261.6256 - 200.0) / 100.0         # three exact C4 frames ...
    z[:3, 1] = [0.3, 0.0, 0.3]                    # ... one of them clean
    latent, info = tuned_default_latent(Model(), z, reference_note=60, sample_rate=SR,
                                        n_fft=N_FFT, max_candidates=600)
    assert latent is not None and info["at_reference_note"] >= 3
    mag = Model.decoder(torch.tensor([latent])).numpy()[0]
    assert abs(cents(estimate_f0(mag.astype(np.float64), BIN_HZ), 261.6256)) <= 10.0
    assert latent[1] == pytest.approx(0.0)  # the clean one, not a noisy one
    assert info["harmonicity"] > 0.99


def test_none_when_no_frame_is_at_the_reference_note():
    z = np.zeros((50, 8), np.float32)
    z[:, 0] = np.linspace(1.2, 2.0, 50)           # 320..400 Hz: never C4
    latent, info = tuned_default_latent(Model(), z, reference_note=60, sample_rate=SR,
                                        n_fft=N_FFT)
    assert latent is None and info["at_reference_note"] == 0
