"""A known-answer decoder for tests: an ONNX graph that emits a harmonic spectrum.

``build_harmonic_decoder(path)`` writes a ``decoder.onnx`` that satisfies
``docs/contracts.md`` (input ``z`` float32 [batch, latent_dim] -> output
``magnitude`` float32 [batch, n_fft//2 + 1], every required metadata key), built
directly with ``onnx.helper`` so no torch is needed.

What it emits, exactly (so tests can check pitch and phase against it):

- harmonics ``h = 1 .. n_harmonics`` at ``h * f0`` Hz (``f0`` = the reference note,
  C4 = 261.6256 Hz by default); harmonics above Nyquist are left out;
- each harmonic is a peak shaped like the main lobe of a periodic Hann window
  (``|sinc(d) / (1 - d**2)|`` for bin offsets ``|d| < 2``, zero outside), i.e. what
  the STFT of a steady sinusoid looks like, so magnitudes are nearly consistent;
- harmonic amplitudes ``a_h = softplus(logit_h) / h`` with
  ``logit_h = 1 + z[group(h)]`` for ``h >= 2`` and ``logit_1 = 1 + 0.25 * z[0]``;
  ``group(h) = (h - 2) % latent_dim``. So latent ``i`` scales harmonics
  ``i + 2, i + 2 + latent_dim, ...`` and the fundamental is always present
  (it only fades slowly with ``z[0]``). Output is ``>= 0`` by construction;
- the frame is normalised by its maximum (``/ max(max_k m_k, 1e-9)``), so values lie
  in 0..1 like a trained decoder's output.

``harmonic_amplitudes(z, ...)`` returns the same ``a_h`` in numpy for reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["build_harmonic_decoder", "harmonic_amplitudes", "hann_lobe_basis", "midi_to_hz",
           "measure_f0", "cents", "rms_dbfs", "rms_modulation"]

REFERENCE_NOTE = 60


def midi_to_hz(note: float) -> float:
    """12-TET frequency of a MIDI note, A4 (69) = 440 Hz."""
    return 440.0 * 2.0 ** ((note - 69.0) / 12.0)


def _groups(n_harmonics: int, latent_dim: int) -> np.ndarray:
    """Gain matrix G [latent_dim, n_harmonics]: logit = 1 + z @ G."""
    g = np.zeros((latent_dim, n_harmonics), dtype=np.float64)
    g[0, 0] = 0.25
    for h in range(2, n_harmonics + 1):
        g[(h - 2) % latent_dim, h - 1] = 1.0
    return g


def hann_lobe_basis(f0: float, n_harmonics: int, sample_rate: int, n_fft: int) -> np.ndarray:
    """P [n_harmonics, n_fft//2+1]: Hann main-lobe peak of harmonic h in row h-1.

    Rows of harmonics whose lobe would reach past Nyquist are zero.
    """
    n_bins = n_fft // 2 + 1
    k = np.arange(n_bins, dtype=np.float64)
    basis = np.zeros((n_harmonics, n_bins), dtype=np.float64)
    for h in range(1, n_harmonics + 1):
        centre = h * f0 * n_fft / sample_rate
        if centre + 2.0 >= n_bins - 1:
            continue
        d = k - centre
        lobe = np.abs(np.sinc(d) / np.where(np.abs(np.abs(d) - 1.0) < 1e-9, 1e-9, 1.0 - d**2))
        # At |d| == 1 the expression is 0/0; its limit is 0.5.
        lobe[np.abs(np.abs(d) - 1.0) < 1e-9] = 0.5
        lobe[np.abs(d) >= 2.0] = 0.0
        basis[h - 1] = lobe
    return basis


def harmonic_amplitudes(z: np.ndarray, n_harmonics: int = 16, latent_dim: int = 8) -> np.ndarray:
    """Reference amplitudes a [batch, n_harmonics] (before frame normalisation)."""
    z = np.atleast_2d(np.asarray(z, dtype=np.float64))
    logits = 1.0 + z @ _groups(n_harmonics, latent_dim)
    softplus = np.logaddexp(0.0, logits)
    return softplus / np.arange(1, n_harmonics + 1)


def build_harmonic_decoder(
    path,
    *,
    sample_rate: int = 44100,
    n_fft: int = 4096,
    hop_length: int = 1024,
    latent_dim: int = 8,
    f0: float = 261.6256,
    n_harmonics: int = 16,
    reference_note: int = REFERENCE_NOTE,
    drop_keys: tuple[str, ...] = (),
    extra_metadata: dict | None = None,
) -> Path:
    """Write a harmonic decoder ONNX file and return its path.

    Parameters
    ----------
    path : str or Path
        Target file (``*.onnx``) or a directory, in which ``decoder.onnx`` is written.
    drop_keys : tuple of str
        Metadata keys to leave out (to test the runtime's refusal).
    extra_metadata : dict, optional
        Keys to add or override (values are written as given if str, else JSON).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = Path(path)
    if path.suffix != ".onnx":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "decoder.onnx"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)

    n_bins = n_fft // 2 + 1
    gains = _groups(n_harmonics, latent_dim).astype(np.float32)
    inv_h = (1.0 / np.arange(1, n_harmonics + 1)).astype(np.float32)[None, :]
    basis = hann_lobe_basis(f0, n_harmonics, sample_rate, n_fft).astype(np.float32)

    inits = [
        numpy_helper.from_array(gains, "G"),
        numpy_helper.from_array(np.ones((1, n_harmonics), np.float32), "bias"),
        numpy_helper.from_array(inv_h, "inv_h"),
        numpy_helper.from_array(basis, "P"),
        numpy_helper.from_array(np.array([1e-9], np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("MatMul", ["z", "G"], ["zg"]),
        helper.make_node("Add", ["zg", "bias"], ["logits"]),
        helper.make_node("Softplus", ["logits"], ["sp"]),
        helper.make_node("Mul", ["sp", "inv_h"], ["amps"]),
        helper.make_node("MatMul", ["amps", "P"], ["raw"]),
        helper.make_node("ReduceMax", ["raw"], ["peak"], axes=[1], keepdims=1),
        helper.make_node("Max", ["peak", "eps"], ["peak_safe"]),
        helper.make_node("Div", ["raw", "peak_safe"], ["magnitude"]),
    ]
    graph = helper.make_graph(
        nodes,
        "harmonic_decoder",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", latent_dim])],
        [helper.make_tensor_value_info("magnitude", TensorProto.FLOAT, ["batch", n_bins])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8

    z_lo = -2.0 * np.ones(latent_dim)
    z_hi = 2.0 * np.ones(latent_dim)
    meta = {
        "canne_format_version": "1",
        "sample_rate": str(int(sample_rate)),
        "n_fft": str(int(n_fft)),
        "hop_length": str(int(hop_length)),
        "window": "hann",
        "latent_dim": str(int(latent_dim)),
        "latent_min": json.dumps(z_lo.tolist()),
        "latent_max": json.dumps(z_hi.tolist()),
        "latent_default": json.dumps(np.zeros(latent_dim).tolist()),
        "reference_note": str(int(reference_note)),
        "corpus": f"synthetic harmonic decoder, f0={f0} Hz, {n_harmonics} harmonics",
        "validation_metrics": json.dumps({"sc_db": 0.0}),
    }
    for key, value in (extra_metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value)
    for key in drop_keys:
        meta.pop(key, None)
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ---------------------------------------------------------------- measurement helpers
def measure_f0(y: np.ndarray, sample_rate: float, guess_hz: float, *, search: float = 0.2) -> float:
    """Frequency (Hz) of the strongest peak within ``guess_hz * (1 +/- search)``.

    Zero-padded Hann-windowed FFT (2**22 points) with parabolic interpolation on
    the log magnitude: resolution far below a cent for a second of audio.
    """
    y = np.asarray(y, dtype=np.float64)
    n_fft = 1 << 22
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size), n_fft))
    freqs = np.arange(spec.size) * sample_rate / n_fft
    band = np.flatnonzero((freqs > guess_hz * (1 - search)) & (freqs < guess_hz * (1 + search)))
    i = band[np.argmax(spec[band])]
    a, b, c = np.log(spec[i - 1:i + 2] + 1e-300)
    return float((i + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate / n_fft)


def cents(f: float, ref: float) -> float:
    return float(1200.0 * np.log2(f / ref))


def rms_dbfs(y: np.ndarray) -> float:
    r = float(np.sqrt(np.mean(np.square(np.asarray(y, dtype=np.float64))))) if len(y) else 0.0
    return 20.0 * np.log10(r) if r > 0 else float("-inf")


def rms_modulation(y: np.ndarray, window: int, step: int = 256) -> float:
    """(max - min) / mean of the moving RMS over ``window`` samples."""
    y = np.asarray(y, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(y * y)])
    ms = (c[window::step] - c[:-window:step][: len(c[window::step])]) / window
    r = np.sqrt(ms)
    return float((r.max() - r.min()) / r.mean())
