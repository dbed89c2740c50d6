"""daemon.core.model.DecoderModel: loads real ONNX decoders, validates their metadata."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.errors import CanneError, ModelError, ModelNotFoundError
from daemon.core.model import REQUIRED_KEYS, DecoderModel
from harmonic_model import build_harmonic_decoder, harmonic_amplitudes, hann_lobe_basis


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("harmonic")
    build_harmonic_decoder(d)
    return d


def test_loads_directory_and_file_with_metadata(model_dir):
    for path in (model_dir, model_dir / "decoder.onnx"):
        m = DecoderModel(path)
        assert (m.sample_rate, m.n_fft, m.hop_length, m.n_bins, m.latent_dim) == (44100, 4096, 1024, 2049, 8)
        assert m.reference_note == 60
        assert m.latent_min.shape == m.latent_max.shape == m.latent_default.shape == (8,)
        assert m.metadata["window"] == "hann"
        assert isinstance(m.metadata["validation_metrics"], dict)


def test_decode_matches_numpy_reference(model_dir):
    m = DecoderModel(model_dir)
    z = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    got = m.decode(z)
    ref = harmonic_amplitudes(z) @ hann_lobe_basis(261.6256, 16, 44100, 4096)
    ref /= ref.max(axis=1, keepdims=True)
    assert got.shape == (5, 2049) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5)
    out = np.zeros((5, 2049), np.float32)
    assert m.decode(z, out=out) is out
    np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("missing", [("latent_min",), ("sample_rate", "n_fft"), ("reference_note",)],
                         ids=["one-key", "two-keys", "reference-note"])
def test_missing_metadata_is_refused_naming_keys_and_file(tmp_path, missing):
    path = build_harmonic_decoder(tmp_path / "m.onnx", drop_keys=missing)
    with pytest.raises(ModelError) as info:
        DecoderModel(path)
    msg = str(info.value)
    assert str(path) in msg
    for key in missing:
        assert key in msg
    assert "\n" not in msg


def test_training_config_is_optional(tmp_path):
    assert "training_config" not in REQUIRED_KEYS
    DecoderModel(build_harmonic_decoder(tmp_path / "m.onnx"))


@pytest.mark.parametrize("key,value,needle", [
    ("canne_format_version", "3", "canne_format_version"),
    ("canne_format_version", "2", "format-2 metadata is missing key"),
    ("latent_min", [0.0, 1.0], "latent_min"),
    ("n_fft", "-5", "n_fft"),
    ("window", "hamming", "window"),
], ids=["future-version", "format-2-without-conditioning", "short-latent-range", "negative-n_fft", "unknown-window"])
def test_bad_metadata_values_are_refused(tmp_path, key, value, needle):
    path = build_harmonic_decoder(tmp_path / "m.onnx", extra_metadata={key: value})
    with pytest.raises(ModelError, match=needle):
        DecoderModel(path)


def test_missing_path_is_a_file_not_found_error(tmp_path):
    with pytest.raises(ModelNotFoundError) as info:
        DecoderModel(tmp_path / "nowhere")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, CanneError)
    assert "nowhere" in str(info.value)


def test_not_an_onnx_file(tmp_path):
    bad = tmp_path / "decoder.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="decoder.onnx"):
        DecoderModel(tmp_path)


def test_decode_rejects_wrong_width(model_dir):
    m = DecoderModel(model_dir)
    with pytest.raises(ModelError, match=r"\[batch, 8\]"):
        m.decode(np.zeros((1, 5), np.float32))


def test_output_width_must_match_n_fft(tmp_path):
    """A decoder emitting 2049 bins whose metadata says n_fft=2048 (1025 bins) is refused
    at load, naming both, instead of failing inside the audio path."""
    path = build_harmonic_decoder(tmp_path / "m.onnx", extra_metadata={"n_fft": 2048})
    with pytest.raises(ModelError) as info:
        DecoderModel(path)
    msg = str(info.value)
    assert str(path) in msg and "2049" in msg and "n_fft=2048" in msg and "1025" in msg


def test_latent_dim_must_match_the_graph(tmp_path):
    """Metadata latent_dim=4 on a graph taking z [batch, 8]: a ModelError at load."""
    meta = {"latent_dim": 4, "latent_min": [-2.0] * 4, "latent_max": [2.0] * 4, "latent_default": [0.0] * 4}
    path = build_harmonic_decoder(tmp_path / "m.onnx", extra_metadata=meta)
    with pytest.raises(ModelError) as info:
        DecoderModel(path)
    msg = str(info.value)
    assert str(path) in msg and "latent_dim=4" in msg and "['batch', 8]" in msg and "\n" not in msg
