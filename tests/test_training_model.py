"""The autoencoder's pieces against numpy/scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.fft
import torch

from training.errors import TrainingError
from training.model import (Autoencoder, FeatureAppend, ModelConfig, mel_filterbank,
                            THESIS_DECODER, THESIS_ENCODER)
from training.train import spectral_metrics


def _frames(n=16, bins=129, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, bins)).astype(np.float32) ** 4
    return x / x.max(axis=1, keepdims=True)


@pytest.mark.parametrize("append,extra", [("none", 0), ("diff1", 128), ("diff2", 127),
                                          ("both", 255), ("mfcc", 13)])
def test_feature_append_matches_numpy(append, extra):
    cfg = ModelConfig(n_bins=129, sample_rate=8000, append=append, n_mels=24, n_mfcc=13)
    x = _frames()
    got = FeatureAppend(cfg)(torch.as_tensor(x)).numpy()
    assert got.shape == (16, 129 + extra) == (16, 129 + FeatureAppend.n_extra(cfg))
    d1, d2 = np.diff(x, axis=1), np.diff(x, n=2, axis=1)
    mel = mel_filterbank(129, 8000, 24)
    mfcc = scipy.fft.dct(np.log(x @ mel + 1e-6), type=2, norm="ortho", axis=1)[:, :13]
    ref = {"none": x, "diff1": np.hstack([x, d1]), "diff2": np.hstack([x, d2]),
           "both": np.hstack([x, d1, d2]), "mfcc": np.hstack([x, mfcc])}[append]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_thesis_topology_and_decoder_size():
    m = Autoencoder(ModelConfig(append="diff1"))
    widths = [l.out_features for l in m.encoder.net if isinstance(l, torch.nn.Linear)]
    assert widths == [*THESIS_ENCODER, 8]
    widths = [l.out_features for l in m.decoder.net if isinstance(l, torch.nn.Linear)]
    assert widths == [*THESIS_DECODER, 2049]
    assert m.encoder.net[0].in_features == 2049 + 2048  # first-difference append
    n_dec = sum(p.numel() for p in m.decoder.parameters())
    assert n_dec * 4 <= 12e6  # float32 decoder within the 12 MB budget


def test_no_bias_option_has_no_bias():
    m = Autoencoder(ModelConfig(n_bins=129, bias=False, encoder_widths=[16], decoder_widths=[16]))
    assert all(l.bias is None for l in m.modules() if isinstance(l, torch.nn.Linear))


@pytest.mark.parametrize("key,value", [("append", "third_diff"), ("output_activation", "linear"),
                                       ("activation", "swish"), ("latent_dim", 0)])
def test_bad_model_config_is_refused(key, value):
    with pytest.raises(TrainingError, match=key):
        ModelConfig(**{key: value})


def test_spectral_metrics_forms():
    rng = np.random.default_rng(5)
    x = rng.random((50, 64))
    y = x + 0.1 * rng.standard_normal(x.shape)
    m = spectral_metrics(float(np.sum((x - y) ** 2)), float(np.sum(x ** 2)))
    assert math.isclose(m["sc_mse"], np.mean((x - y) ** 2) / np.mean(x ** 2), rel_tol=1e-9)
    assert math.isclose(m["sc_sqrt"], np.linalg.norm(x - y) / np.linalg.norm(x), rel_tol=1e-9)
    assert math.isclose(m["sc_db"], 20 * math.log10(m["sc_sqrt"]), rel_tol=1e-9)
