"""Decoder model: an ONNX ``decoder.onnx`` run with onnxruntime, validated metadata.

The contract is :mod:`daemon.core.contract` (described in ``docs/contracts.md``): input
``z`` float32 [batch, latent_dim] (format 2 adds ``pitch`` float32 [batch, 1], a MIDI
note number), output float32 [batch, n_fft//2 + 1], configuration in ``metadata_props``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from daemon.core import contract
from daemon.core.contract import REQUIRED_KEYS, SUPPORTED_FORMAT_VERSIONS
from daemon.errors import ModelError, ModelNotFoundError

__all__ = ["DecoderModel", "EncoderModel", "REQUIRED_KEYS", "SUPPORTED_FORMAT_VERSIONS"]


def _resolve(path) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "decoder.onnx"
    if not p.is_file():
        raise ModelNotFoundError(
            f"model not found: {p} (give a model directory holding decoder.onnx or the .onnx file itself)"
        )
    return p


def _session(path: Path):
    """An onnxruntime session as the live path needs it: one intra-op and one inter-op
    thread, sequential (the default thread pool has millisecond worst cases), CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several private types
        raise ModelError(f"{path}: onnxruntime cannot load it: "
                         f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from None


class DecoderModel:
    """A decoder ONNX session with the model's configuration.

    Parameters
    ----------
    path : str or Path
        A model directory (``decoder.onnx`` inside) or the ``.onnx`` file.

    Attributes
    ----------
    sample_rate, n_fft, hop_length, n_bins, latent_dim : int
    latent_min, latent_max, latent_default : ndarray [latent_dim], float32
    reference_note : int
    metadata : dict
        Parsed metadata (JSON values decoded).
    config : daemon.core.contract.ModelConfig
        The validated configuration these attributes come from.
    path : Path
        The ``.onnx`` file.
    """

    def __init__(self, path):
        import onnxruntime as ort

        self.path = _resolve(path)
        self._session = _session(self.path)
        try:
            raw = dict(self._session.get_modelmeta().custom_metadata_map)
        except Exception as exc:  # e.g. UnicodeDecodeError: metadata strings that are not UTF-8
            raise ModelError(f"{self.path}: unreadable metadata ({type(exc).__name__}); "
                             "re-export the model") from None
        self.metadata = self._validate(raw)
        self._input_name = contract.check_decoder_inputs(
            [i.name for i in self._session.get_inputs()], self.conditioned, self.path)
        self._output_name = self._session.get_outputs()[0].name
        # decode(out=...) writes straight into the caller's buffer (no result array, no copy)
        self._binding = self._session.io_binding()
        self._bound_out = None  # (data pointer, shape) of the bound output buffer
        self._bound: dict = {}  # input name -> ((data pointer, shape), array) bound
        self._ort = ort
        # warm-up: the first run allocates; do it before any audio stream opens. It also
        # checks the output width against n_fft, which would otherwise fail in render
        try:
            z2 = np.tile(self.latent_default, (2, 1))
            frames = (self.decode_pitched(z2, np.array([[self.pitch_min], [self.pitch_max]],
                                                       np.float32))
                      if self.conditioned else self.decode(z2))
        except Exception as exc:  # e.g. the graph's z width differs from latent_dim
            raise ModelError(
                f"{self.path}: decoding latent_default failed (metadata latent_dim={self.latent_dim}, "
                f"graph input {self._input_name} {self._session.get_inputs()[0].shape}): "
                f"{(str(exc).splitlines() or [type(exc).__name__])[0]}; re-export the model"
            ) from exc
        if not isinstance(frames, np.ndarray) or frames.dtype != np.float32:
            raise ModelError(
                f"{self.path}: decoder output must be float32, the graph gives "
                f"{getattr(frames, 'dtype', type(frames).__name__)}; re-export the model"
            )
        if frames.shape != (2, self.n_bins):
            raise ModelError(
                f"{self.path}: decoder output has shape {list(frames.shape)} for a batch of 2; "
                f"metadata n_fft={self.n_fft} needs [batch, {self.n_bins}] (n_fft//2 + 1); "
                "re-export the model"
            )

    # ------------------------------------------------------------------ metadata
    def _validate(self, raw: dict) -> dict:
        """Check ``raw`` against the contract (daemon.core.contract) and set the attributes."""
        cfg = contract.parse_metadata(raw, self.path)
        self.config = cfg
        self.sample_rate, self.n_fft, self.hop_length = cfg.sample_rate, cfg.n_fft, cfg.hop_length
        self.latent_dim, self.n_bins = cfg.latent_dim, cfg.n_bins
        self.latent_min, self.latent_max = cfg.latent_min, cfg.latent_max
        self.latent_default, self.reference_note = cfg.latent_default, cfg.reference_note
        self.format_version, self.conditioned = cfg.format_version, cfg.conditioned
        self.pitch_min, self.pitch_max, self.decoder_kind = cfg.pitch_min, cfg.pitch_max, cfg.decoder_kind
        # "exact": the decoder takes any pitch (it clamps its own conditioning to the trained
        # range and puts the partials on the pitch given); "transpose": the caller clamps
        self.pitch_beyond_range = cfg.pitch_beyond_range
        return cfg.metadata

    # ------------------------------------------------------------------ inference
    def decode(self, z, out: np.ndarray | None = None) -> np.ndarray:
        """Decode latents to magnitude frames.

        Parameters
        ----------
        z : array_like [batch, latent_dim]
        out : ndarray [batch, n_bins] float32, optional
            Filled in place if given (C-contiguous float32: onnxruntime writes into
            it directly through an IO binding; one thread at a time per model,
            as the engine's render does).

        Returns
        -------
        ndarray [batch, n_bins] float32, linear magnitude (0..~1). A pitch-conditioned
        (format 2) decoder is decoded at its reference note here; see :meth:`decode_pitched`.
        """
        z = np.ascontiguousarray(z, dtype=np.float32)
        if z.ndim == 1:
            z = z[None, :]
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ModelError(f"{self.path}: decode expects z [batch, {self.latent_dim}], got {z.shape}")
        if self.conditioned:  # format 2 asked without a pitch: at the reference note
            ref = min(max(float(self.reference_note), self.pitch_min), self.pitch_max)
            return self.decode_pitched(z, np.full((z.shape[0], 1), ref, np.float32), out)
        return self._run({self._input_name: z}, z.shape[0], out)

    def decode_pitched(self, z, pitch, out: np.ndarray | None = None) -> np.ndarray:
        """Decode latents at pitches (format 2): ``z`` [batch, latent_dim], ``pitch``
        [batch, 1] MIDI note numbers (float, inside ``pitch_min..pitch_max``).

        Like :meth:`decode`, ``out`` [batch, n_bins] float32 C-contiguous is written in
        place through an IO binding (``z`` and ``pitch`` bound once per buffer).
        """
        if not self.conditioned:
            raise ModelError(f"{self.path}: this format-{self.format_version} decoder takes no pitch")
        z = np.ascontiguousarray(z, dtype=np.float32)
        pitch = np.ascontiguousarray(pitch, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.latent_dim or pitch.shape != (z.shape[0], 1):
            raise ModelError(f"{self.path}: decode_pitched expects z [batch, {self.latent_dim}] and "
                             f"pitch [batch, 1], got {z.shape} and {pitch.shape}")
        return self._run({contract.DECODER_INPUT: z, contract.PITCH_INPUT: pitch}, z.shape[0], out)

    def _run(self, feeds: dict, batch: int, out: np.ndarray | None) -> np.ndarray:
        """Run the session. With ``out`` (float32 C-contiguous [batch, n_bins]) the inputs
        and the output are bound once per buffer (OrtValues over the caller's memory, no
        copy) and onnxruntime writes straight into ``out``; else a new array is returned."""
        if (out is not None and out.dtype == np.float32 and out.flags.c_contiguous
                and out.shape == (batch, self.n_bins)):
            b = self._binding
            for name, arr in feeds.items():
                key = (arr.ctypes.data, arr.shape)
                if self._bound.get(name, (None,))[0] != key:
                    b.bind_ortvalue_input(name, self._ort.OrtValue.ortvalue_from_numpy(arr))
                    self._bound[name] = (key, arr)  # keeps the bound memory alive
            key = (out.ctypes.data, out.shape)
            if self._bound_out != key:
                b.bind_output(self._output_name, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
                self._bound_out = key
            self._session.run_with_iobinding(b)
            return out
        result = self._session.run([self._output_name], feeds)[0]
        if out is None:
            return result
        np.copyto(out, result)
        return out

    def __repr__(self) -> str:
        return (
            f"DecoderModel({str(self.path)!r}, sr={self.sample_rate}, n_fft={self.n_fft}, "
            f"hop={self.hop_length}, latent_dim={self.latent_dim})"
        )


class EncoderModel:
    """The model's ``encoder.onnx`` (magnitude frame -> latent), for the ANNe effect.

    ``EncoderModel(decoder)`` loads ``encoder.onnx`` beside the decoder's file and checks
    that it agrees with it (input ``magnitude`` [batch, n_bins], output [batch,
    latent_dim]). ``encode(frames [batch, n_bins]) -> z [batch, latent_dim]``; with
    ``out`` given (float32 C-contiguous) it writes in place through an IO binding.
    """

    def __init__(self, decoder: DecoderModel):
        import onnxruntime as ort

        self.path = decoder.path.parent / "encoder.onnx"
        if not self.path.is_file():
            raise ModelNotFoundError(f"encoder not found: {self.path} (the effect needs the model's "
                                     "encoder.onnx beside decoder.onnx)")
        self._session = _session(self.path)
        self.n_bins = decoder.n_bins
        self.latent_dim = decoder.latent_dim
        self._in = self._session.get_inputs()[0].name
        self._out = self._session.get_outputs()[0].name
        self._ort = ort
        self._binding = self._session.io_binding()
        self._bound = None
        try:
            z = self.encode(np.zeros((2, self.n_bins), np.float32))
        except Exception as exc:
            raise ModelError(f"{self.path}: encoding a frame of {self.n_bins} bins failed: "
                             f"{(str(exc).splitlines() or [type(exc).__name__])[0]}") from None
        if not isinstance(z, np.ndarray) or z.dtype != np.float32 or z.shape != (2, self.latent_dim):
            raise ModelError(f"{self.path}: encoder output is {getattr(z, 'dtype', '?')} "
                             f"{list(getattr(z, 'shape', []))}, expected float32 [batch, "
                             f"{self.latent_dim}] (the decoder's latent_dim)")

    def encode(self, frames, out: np.ndarray | None = None) -> np.ndarray:
        x = np.ascontiguousarray(frames, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if (out is not None and out.dtype == np.float32 and out.flags.c_contiguous
                and out.shape == (x.shape[0], self.latent_dim)):
            key = (x.ctypes.data, x.shape, out.ctypes.data)
            b = self._binding
            if self._bound != key:
                b.bind_ortvalue_input(self._in, self._ort.OrtValue.ortvalue_from_numpy(x))
                b.bind_output(self._out, "cpu", 0, np.float32, list(out.shape), out.ctypes.data)
                self._bound = key
                self._keep = (x, out)
            self._session.run_with_iobinding(b)
            return out
        return self._session.run([self._out], {self._in: x})[0]
