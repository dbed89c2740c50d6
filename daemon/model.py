"""Decoder model: an ONNX ``decoder.onnx`` run with onnxruntime, validated metadata.

The contract is ``docs/contracts.md``: input ``z`` float32 [batch, latent_dim]
(format 2 adds ``pitch`` float32 [batch, 1], a MIDI note number), output float32
[batch, n_fft//2 + 1], configuration in ``metadata_props``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from daemon.errors import ModelError, ModelNotFoundError

__all__ = ["DecoderModel", "EncoderModel", "REQUIRED_KEYS", "SUPPORTED_FORMAT_VERSIONS"]

REQUIRED_KEYS = (
    "canne_format_version",
    "sample_rate",
    "n_fft",
    "hop_length",
    "window",
    "latent_dim",
    "latent_min",
    "latent_max",
    "latent_default",
    "reference_note",
    "corpus",
    "validation_metrics",
)
SUPPORTED_FORMAT_VERSIONS = ("1", "2")
# format 2 (pitch-conditioned decoder): keys required on top of REQUIRED_KEYS
CONDITIONED_KEYS = ("conditioning", "pitch_unit", "pitch_min", "pitch_max", "decoder_kind")
DECODER_KINDS = ("harmonic", "mlp")


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
        inputs = [i.name for i in self._session.get_inputs()]
        if self.conditioned:
            if sorted(inputs) != ["pitch", "z"]:
                raise ModelError(f"{self.path}: a format-2 decoder takes inputs 'z' and 'pitch', "
                                 f"this graph takes {inputs}; re-export the model")
            self._input_name = "z"
        else:
            self._input_name = inputs[0]
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
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ModelError(
                f"{self.path}: decoder metadata is missing key(s) {', '.join(missing)}; "
                "re-export the model with canne-train export (see docs/contracts.md)"
            )
        meta: dict = {}
        for key, value in raw.items():
            try:
                meta[key] = json.loads(value)
            except (ValueError, TypeError, RecursionError):  # also a 5,000-digit number, [[[[...]]]]
                meta[key] = value
        version = str(meta["canne_format_version"])
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ModelError(
                f"{self.path}: canne_format_version={version!r} is not supported "
                f"(this runtime reads {', '.join(SUPPORTED_FORMAT_VERSIONS)}); update canne-live"
            )

        def pos_int(key):
            try:
                v = int(meta[key])
            except (TypeError, ValueError, OverflowError):  # OverflowError: 1e400
                v = 0
            if v <= 0:
                raise ModelError(f"{self.path}: metadata {key}={raw[key]!r:.80} must be a positive integer")
            return v

        self.sample_rate = pos_int("sample_rate")
        self.n_fft = pos_int("n_fft")
        self.hop_length = pos_int("hop_length")
        self.latent_dim = pos_int("latent_dim")
        self.n_bins = self.n_fft // 2 + 1
        if self.n_fft % 2:
            raise ModelError(f"{self.path}: metadata n_fft={self.n_fft} must be even")
        if self.hop_length > self.n_fft:
            raise ModelError(
                f"{self.path}: metadata hop_length={self.hop_length} exceeds n_fft={self.n_fft}"
            )
        if str(meta["window"]).lower() != "hann":
            raise ModelError(f"{self.path}: metadata window={meta['window']!r:.80}; only 'hann' is supported")

        def vec(key):
            try:
                v = np.asarray(meta[key], dtype=np.float32).reshape(-1)
            except (TypeError, ValueError, OverflowError):
                v = np.zeros(0, np.float32)
            if v.shape != (self.latent_dim,) or not np.all(np.isfinite(v)):
                raise ModelError(
                    f"{self.path}: metadata {key}={raw[key]!r:.80} must be a list of "
                    f"{self.latent_dim} finite numbers (latent_dim)"
                )
            return v

        self.latent_min = vec("latent_min")
        self.latent_max = vec("latent_max")
        self.latent_default = vec("latent_default")
        try:
            self.reference_note = int(meta["reference_note"])
        except (TypeError, ValueError, OverflowError):
            self.reference_note = -1
        if not 0 <= self.reference_note <= 127:
            raise ModelError(
                f"{self.path}: metadata reference_note={raw['reference_note']!r:.80} must be a MIDI note 0..127"
            )
        self.format_version = int(version)
        self.conditioned = version == "2"
        self.pitch_min, self.pitch_max = 0.0, 127.0
        self.decoder_kind = "free"
        if self.conditioned:
            missing = [k for k in CONDITIONED_KEYS if k not in raw]
            if missing:
                raise ModelError(f"{self.path}: format-2 metadata is missing key(s) "
                                 f"{', '.join(missing)}; re-export the model (docs/contracts.md)")
            if meta["conditioning"] != "pitch" or meta["pitch_unit"] != "midi_note":
                raise ModelError(f"{self.path}: metadata conditioning={raw['conditioning']!r}, "
                                 f"pitch_unit={raw['pitch_unit']!r}; this runtime reads "
                                 "conditioning 'pitch' in unit 'midi_note'")
            try:
                lo, hi = float(meta["pitch_min"]), float(meta["pitch_max"])
            except (TypeError, ValueError, OverflowError):
                lo = hi = float("nan")
            if not (0.0 <= lo < hi <= 127.0):
                raise ModelError(f"{self.path}: metadata pitch_min={raw['pitch_min']!r}, "
                                 f"pitch_max={raw['pitch_max']!r} must be MIDI notes with "
                                 "0 <= pitch_min < pitch_max <= 127")
            self.pitch_min, self.pitch_max = lo, hi
            if meta["decoder_kind"] not in DECODER_KINDS:
                raise ModelError(f"{self.path}: metadata decoder_kind={raw['decoder_kind']!r} "
                                 f"must be one of {', '.join(DECODER_KINDS)}")
            self.decoder_kind = meta["decoder_kind"]
        return meta

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
        return self._run({"z": z, "pitch": pitch}, z.shape[0], out)

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
