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


def _analytic_lobe(d: np.ndarray) -> np.ndarray:
    """The Hann window's main lobe, float64: |sin(pi d) / (pi d (1 - d^2))|, 1 at 0, 1/2
    at +-1, 0 from +-2 on."""
    d = np.asarray(d, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.abs(np.sin(np.pi * d) / (np.pi * d * (1.0 - d * d)))
    w[np.abs(d) < 1e-9] = 1.0
    w[np.abs(np.abs(d) - 1.0) < 1e-9] = 0.5
    w[np.abs(d) >= 2.0] = 0.0
    return w


def _harmonic_cfg(**kw) -> ModelConfig:
    base = dict(n_bins=2049, conditioning="pitch", pitch_decoder="harmonic", envelope="smooth",
                encoder_widths=[32], decoder_widths=[32, 32], noise_scale="wide",
                harmonic_floors=[0.35, 0.2, 0.2])
    return ModelConfig(**{**base, **kw})


def test_harmonic_comb_lobes_match_the_hann_formula_at_every_bin():
    """The comb reads its lobes from a table (no Where in the exported graph): against the
    analytic Hann lobe in float64, at pitches across and beyond the playable range."""
    dec = Autoencoder(_harmonic_cfg()).decoder
    bins = np.arange(2049, dtype=np.float64)
    for note in (24.0, 36.0, 47.37, 60.0, 69.5, 96.0, 110.0):
        f0 = 440.0 * 2.0 ** ((note - 69.0) / 12.0) / (44100 / 4096)
        ratio = bins / f0
        h = np.round(ratio)
        want = np.where(h >= 1, _analytic_lobe((ratio - h) * f0), 0.0)
        got = dec.comb(torch.tensor([[note]])).numpy()[0]
        # float32 ratio arithmetic costs ~1e-4 at the top bins; the table itself ~1e-6
        assert np.max(np.abs(got - want)) < 3e-4, note
        k = np.arange(1, int(2048 / f0) + 1)
        near = np.round(k * f0).astype(int)
        assert np.all(got[near] > 0.4)  # every harmonic has its lobe
        assert got[: max(int(f0 / 2) - 2, 0)].max(initial=0.0) == 0.0  # nothing below 1st


def test_exported_harmonic_decoder_has_no_where_and_gathers_elementwise(tmp_path):
    """onnxruntime runs Where and per-bin Gather several times slower than arithmetic and
    GatherElements; the hop's decoder graph keeps to the fast operators."""
    import onnx

    from training.export import _export_graph

    dec = Autoencoder(_harmonic_cfg()).decoder.eval()
    path = tmp_path / "d.onnx"
    _export_graph(dec, (torch.zeros(2, 8), torch.full((2, 1), 60.0)), path, ("z", "pitch"),
                  "magnitude")
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "Where" not in ops and "Gather" not in ops, ops
    assert "GatherElements" in ops


def test_harmonic_floors_hold_on_the_table_comb():
    """The first three harmonics never fall below 0.35, 0.2, 0.2 of the strongest of the
    first eight, whatever the latent."""
    torch.manual_seed(0)
    dec = Autoencoder(_harmonic_cfg()).decoder.eval()
    z = torch.randn(64, 8) * 4.0
    pitch = torch.full((64, 1), 48.0)
    with torch.no_grad():
        noise = torch.relu(dec.noise(dec.trunk(torch.cat([z, (pitch - 60.0) / 24.0], 1)))) @ dec.basis
        y = dec(z, pitch) - noise
    f0 = 440.0 * 2.0 ** ((48.0 - 69.0) / 12.0) / (44100 / 4096)
    peaks = y[:, [int(round(k * f0)) for k in range(1, 9)]].numpy()
    lobe = dec.comb(pitch[:1]).numpy()[0, [int(round(k * f0)) for k in range(1, 9)]]
    amp = peaks / lobe  # amplitude of each harmonic
    top = amp.max(axis=1)
    for k, fl in enumerate((0.35, 0.2, 0.2)):
        assert np.all(amp[:, k] >= fl * top * (1 - 1e-4)), k


def test_soft_lsd_reads_decibels_above_the_floor_and_saturates_below():
    from training.train import log_spectral_distance, soft_lsd

    x = torch.ones(1, 100)
    assert float(soft_lsd(x, x)) < 1e-3
    assert abs(float(soft_lsd(0.1 * x, x)) - 20.0) < 0.01  # -20 dB everywhere
    y = x.clone()
    y[0, 50:] = 0.0  # half the bins silent: floored at -60 dB
    assert abs(float(soft_lsd(y, x)) - 60.0 / math.sqrt(2)) < 0.1
    assert abs(float(log_spectral_distance(y, x)[0]) - 60.0 / math.sqrt(2)) < 0.01


def test_knob_shortfall_is_zero_only_when_every_neuron_moves_the_spectrum():
    from training.train import KnobRanges, TrainConfig, knob_terms

    torch.manual_seed(0)
    model = Autoencoder(_harmonic_cfg())
    cfg = TrainConfig(knob_weight=1.0, knob_db=12.0, knob_frames=16)
    ranges = KnobRanges()
    z = torch.randn(64, 8)
    ranges.update(z)
    pitch = torch.full((64,), 60.0)
    with torch.no_grad():
        short = float(knob_terms(cfg, model, z, pitch, ranges)[0])
        assert 0.0 <= short <= 12.0 / 20.0
        ranges.lo = ranges.hi = torch.zeros(8)  # no range at all: every pair is identical
        assert abs(float(knob_terms(cfg, model, z, pitch, ranges)[0]) - 12.0 / 20.0) < 1e-3


def test_brightness_and_harmonicity_read_known_spectra():
    """The knob guard's two measures: centroid/f0 of a lone k-th harmonic is k; a comb of
    Hann lobes is harmonic (HNR at its 60 dB cap), flat noise is not (about -6 dB: a
    quarter of the bins at 44.1 kHz / 4096 and 262 Hz lie within 2 bins of a harmonic)."""
    from training.train import brightness, harmonic_to_noise_db

    bin_hz = 44100 / 4096
    dec = Autoencoder(_harmonic_cfg()).decoder
    comb = dec.comb(torch.tensor([[60.0]])).double()
    f0 = 440.0 * 2.0 ** (-9.0 / 12.0)
    lone = torch.zeros(1, 2049, dtype=torch.float64)
    lone[0, int(round(3 * f0 / bin_hz))] = 1.0
    p = torch.tensor([60.0], dtype=torch.float64)
    assert abs(float(brightness(lone, p, bin_hz)) - 3.0 * round(3 * f0 / bin_hz) * bin_hz
               / (3 * f0)) < 1e-9
    assert float(harmonic_to_noise_db(comb, p, bin_hz)) > 59.0
    noise = torch.ones(1, 2049, dtype=torch.float64)
    share = 4.0 / (f0 / bin_hz)  # bins within 2 of a harmonic, per harmonic spacing
    want = 10 * math.log10(share / (1 - share))
    assert abs(float(harmonic_to_noise_db(noise, p, bin_hz)) - want) < 1.0
    # numpy and torch agree
    assert abs(harmonic_to_noise_db(comb.numpy(), p.numpy(), bin_hz)[0]
               - float(harmonic_to_noise_db(comb, p, bin_hz)[0])) < 1e-6
