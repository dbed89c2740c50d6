"""The model contract: what a ``decoder.onnx`` carries, in one place (docs/contracts.md).

Both sides use this module: the daemon's loader (:class:`daemon.core.model.DecoderModel`)
parses and validates with :func:`parse_metadata` and :func:`check_decoder_inputs`, and
the training export (``training/export.py``) writes with :func:`build_metadata` and
checks what it wrote with :func:`parse_metadata` before anything leaves the
temporary folder. No torch, no onnxruntime here: the daemon imports it.

Formats (``canne_format_version``):

- ``1`` (:data:`FORMAT_UNCONDITIONED`): decoder input ``z`` float32 [batch, latent_dim]
  -> output ``magnitude`` float32 [batch, n_fft//2 + 1];
- ``2`` (:data:`FORMAT_PITCH_CONDITIONED`): inputs ``z`` [batch, latent_dim] and
  ``pitch`` float32 [batch, 1] (a MIDI note number, fractional allowed) -> the same
  output; the keys of :data:`CONDITIONED_KEYS` are required on top.

The encoder (``encoder.onnx``) maps ``magnitude`` -> ``z`` in both formats.

Metadata values are ONNX strings; lists and dicts are JSON. Errors are
:class:`daemon.errors.ModelError` with one line that names the file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from daemon.errors import ModelError

__all__ = [
    "FORMAT_UNCONDITIONED", "FORMAT_PITCH_CONDITIONED", "SUPPORTED_FORMAT_VERSIONS",
    "REQUIRED_KEYS", "OPTIONAL_KEYS", "CONDITIONED_KEYS", "DECODER_KINDS", "WINDOW",
    "CONDITIONING", "PITCH_UNIT", "DECODER_INPUT", "PITCH_INPUT", "DECODER_OUTPUT",
    "ENCODER_INPUT", "ENCODER_OUTPUT", "JSON_KEYS", "ModelConfig", "parse_metadata",
    "check_decoder_inputs", "build_metadata",
]

FORMAT_UNCONDITIONED = 1
FORMAT_PITCH_CONDITIONED = 2
SUPPORTED_FORMAT_VERSIONS = (str(FORMAT_UNCONDITIONED), str(FORMAT_PITCH_CONDITIONED))

#: Keys every decoder must carry (the runtime refuses a file missing one).
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
#: Keys the export writes that the runtime does not need.
OPTIONAL_KEYS = ("training_config",)
#: Format 2 (pitch-conditioned decoder): keys required on top of REQUIRED_KEYS.
CONDITIONED_KEYS = ("conditioning", "pitch_unit", "pitch_min", "pitch_max", "decoder_kind")
DECODER_KINDS = ("harmonic", "mlp")
#: Format 2, optional: what the decoder does with a pitch outside pitch_min..pitch_max.
#: "transpose" (the default): nothing; the engine clamps the pitch and transposes the rest.
#: "exact" (harmonic decoders only): the decoder clamps its conditioning to the range
#: itself and places the partials on the harmonics of the pitch given, whatever it is.
BEYOND_RANGE = ("transpose", "exact")
WINDOW = "hann"
CONDITIONING = "pitch"
PITCH_UNIT = "midi_note"
#: Keys whose values are JSON lists, dicts or numbers (the others are plain strings).
JSON_KEYS = ("latent_min", "latent_max", "latent_default", "validation_metrics", "training_config",
             "pitch_min", "pitch_max")

#: Graph input and output names.
DECODER_INPUT = "z"
PITCH_INPUT = "pitch"
DECODER_OUTPUT = "magnitude"
ENCODER_INPUT = "magnitude"
ENCODER_OUTPUT = "z"


@dataclass(frozen=True)
class ModelConfig:
    """A decoder's validated configuration (from :func:`parse_metadata`)."""

    format_version: int
    sample_rate: int
    n_fft: int
    hop_length: int
    latent_dim: int
    latent_min: np.ndarray
    latent_max: np.ndarray
    latent_default: np.ndarray
    reference_note: int
    conditioned: bool
    pitch_min: float
    pitch_max: float
    decoder_kind: str
    metadata: dict = field(repr=False)  # every key, JSON values decoded
    pitch_beyond_range: str = "transpose"

    @property
    def n_bins(self) -> int:
        return self.n_fft // 2 + 1


def parse_metadata(raw: dict, where) -> ModelConfig:
    """Validate the metadata strings ``raw`` of the decoder file ``where``.

    Raises :class:`ModelError` (one line naming ``where`` and the key) when a key is
    missing or a value breaks the contract.
    """
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ModelError(
            f"{where}: decoder metadata is missing key(s) {', '.join(missing)}; "
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
            f"{where}: canne_format_version={version!r} is not supported "
            f"(this runtime reads {', '.join(SUPPORTED_FORMAT_VERSIONS)}); update canne-live"
        )

    def pos_int(key):
        try:
            v = int(meta[key])
        except (TypeError, ValueError, OverflowError):  # OverflowError: 1e400
            v = 0
        if v <= 0:
            raise ModelError(f"{where}: metadata {key}={raw[key]!r:.80} must be a positive integer")
        return v

    sample_rate = pos_int("sample_rate")
    n_fft = pos_int("n_fft")
    hop_length = pos_int("hop_length")
    latent_dim = pos_int("latent_dim")
    if n_fft % 2:
        raise ModelError(f"{where}: metadata n_fft={n_fft} must be even")
    if hop_length > n_fft:
        raise ModelError(f"{where}: metadata hop_length={hop_length} exceeds n_fft={n_fft}")
    if str(meta["window"]).lower() != WINDOW:
        raise ModelError(f"{where}: metadata window={meta['window']!r:.80}; only '{WINDOW}' is supported")

    def vec(key):
        try:
            v = np.asarray(meta[key], dtype=np.float32).reshape(-1)
        except (TypeError, ValueError, OverflowError):
            v = np.zeros(0, np.float32)
        if v.shape != (latent_dim,) or not np.all(np.isfinite(v)):
            raise ModelError(
                f"{where}: metadata {key}={raw[key]!r:.80} must be a list of "
                f"{latent_dim} finite numbers (latent_dim)"
            )
        return v

    latent_min, latent_max, latent_default = vec("latent_min"), vec("latent_max"), vec("latent_default")
    try:
        reference_note = int(meta["reference_note"])
    except (TypeError, ValueError, OverflowError):
        reference_note = -1
    if not 0 <= reference_note <= 127:
        raise ModelError(
            f"{where}: metadata reference_note={raw['reference_note']!r:.80} must be a MIDI note 0..127"
        )
    conditioned = version == str(FORMAT_PITCH_CONDITIONED)
    pitch_min, pitch_max, decoder_kind, beyond = 0.0, 127.0, "free", "transpose"
    if conditioned:
        missing = [k for k in CONDITIONED_KEYS if k not in raw]
        if missing:
            raise ModelError(f"{where}: format-2 metadata is missing key(s) "
                             f"{', '.join(missing)}; re-export the model (docs/contracts.md)")
        if meta["conditioning"] != CONDITIONING or meta["pitch_unit"] != PITCH_UNIT:
            raise ModelError(f"{where}: metadata conditioning={raw['conditioning']!r}, "
                             f"pitch_unit={raw['pitch_unit']!r}; this runtime reads "
                             f"conditioning '{CONDITIONING}' in unit '{PITCH_UNIT}'")
        try:
            lo, hi = float(meta["pitch_min"]), float(meta["pitch_max"])
        except (TypeError, ValueError, OverflowError):
            lo = hi = float("nan")
        if not (0.0 <= lo < hi <= 127.0):
            raise ModelError(f"{where}: metadata pitch_min={raw['pitch_min']!r}, "
                             f"pitch_max={raw['pitch_max']!r} must be MIDI notes with "
                             "0 <= pitch_min < pitch_max <= 127")
        pitch_min, pitch_max = lo, hi
        if meta["decoder_kind"] not in DECODER_KINDS:
            raise ModelError(f"{where}: metadata decoder_kind={raw['decoder_kind']!r} "
                             f"must be one of {', '.join(DECODER_KINDS)}")
        decoder_kind = meta["decoder_kind"]
        beyond = meta.get("pitch_beyond_range", "transpose")
        if beyond not in BEYOND_RANGE or (beyond == "exact" and decoder_kind != "harmonic"):
            raise ModelError(f"{where}: metadata pitch_beyond_range={raw['pitch_beyond_range']!r:.40} "
                             f"must be one of {', '.join(BEYOND_RANGE)} ('exact' only for a "
                             "harmonic decoder)")
    return ModelConfig(
        format_version=int(version), sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
        latent_dim=latent_dim, latent_min=latent_min, latent_max=latent_max,
        latent_default=latent_default, reference_note=reference_note, conditioned=conditioned,
        pitch_min=pitch_min, pitch_max=pitch_max, decoder_kind=decoder_kind, metadata=meta,
        pitch_beyond_range=beyond if conditioned else "transpose",
    )


def check_decoder_inputs(names, conditioned: bool, where) -> str:
    """The graph input that takes ``z``; refuses a format-2 graph without ``z`` and ``pitch``."""
    names = list(names)
    if conditioned:
        if sorted(names) != sorted((DECODER_INPUT, PITCH_INPUT)):
            raise ModelError(f"{where}: a format-2 decoder takes inputs '{DECODER_INPUT}' and "
                             f"'{PITCH_INPUT}', this graph takes {names}; re-export the model")
        return DECODER_INPUT
    return names[0]


def build_metadata(*, sample_rate: int, n_fft: int, hop_length: int, latent_dim: int, latent_min,
                   latent_max, latent_default, reference_note: int, corpus: str,
                   validation_metrics: dict, training_config: dict | None = None,
                   window: str = WINDOW, pitch_range: tuple[float, float] | None = None,
                   decoder_kind: str | None = None, pitch_beyond_range: str | None = None) -> dict:
    """The metadata strings of a decoder (and its encoder), as the runtime reads them.

    ``pitch_range`` (MIDI notes, written with two decimals) and ``decoder_kind`` make it
    a format-2 (pitch-conditioned) model; without them it is format 1.
    ``pitch_beyond_range`` (format 2, optional): see :data:`BEYOND_RANGE`.
    """
    conditioned = pitch_range is not None
    meta = {
        "canne_format_version": str(FORMAT_PITCH_CONDITIONED if conditioned else FORMAT_UNCONDITIONED),
        "sample_rate": str(int(sample_rate)),
        "n_fft": str(int(n_fft)),
        "hop_length": str(int(hop_length)),
        "window": window,
        "latent_dim": str(int(latent_dim)),
        "latent_min": json.dumps([float(v) for v in latent_min]),
        "latent_max": json.dumps([float(v) for v in latent_max]),
        "latent_default": json.dumps([float(v) for v in latent_default]),
        "reference_note": str(int(reference_note)),
        "corpus": corpus,
        "validation_metrics": json.dumps(validation_metrics),
    }
    if training_config is not None:
        meta["training_config"] = json.dumps(training_config)
    if conditioned:
        lo, hi = pitch_range
        meta.update({"conditioning": CONDITIONING, "pitch_unit": PITCH_UNIT,
                     "pitch_min": f"{float(lo):.2f}", "pitch_max": f"{float(hi):.2f}",
                     "decoder_kind": decoder_kind})
        if pitch_beyond_range is not None:
            meta["pitch_beyond_range"] = pitch_beyond_range
    return meta
