"""The CANNe autoencoder: a deep fully connected encoder/decoder on magnitude frames.

Baseline (the 2018 thesis): input 2049 (+ appended features) -> 1000 -> 512 -> 256 -> 128
-> 64 -> 32 -> 16 -> 8 -> 16 -> 32 -> 64 -> 128 -> 256 -> 512 -> 1024 -> 2049, ReLU.
Widths, latent size, bias, activations and the appended features are configuration.
The appended features are computed inside the encoder, so the exported encoder takes the
plain magnitude frame.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.errors import TrainingError

APPEND_OPTIONS = ("none", "diff1", "diff2", "both", "mfcc")
CONDITIONING = ("none", "pitch")
PITCH_DECODERS = ("harmonic", "mlp")
ACTIVATIONS = ("relu", "linear", "softplus", "sigmoid", "tanh", "elu")
THESIS_ENCODER = (1000, 512, 256, 128, 64, 32, 16)
THESIS_DECODER = (16, 32, 64, 128, 256, 512, 1024)


@dataclass
class ModelConfig:
    n_bins: int = 2049
    sample_rate: int = 44100
    append: str = "none"
    encoder_widths: list = field(default_factory=lambda: list(THESIS_ENCODER))
    latent_dim: int = 8
    decoder_widths: list = field(default_factory=lambda: list(THESIS_DECODER))
    bias: bool = True
    activation: str = "relu"
    latent_activation: str = "linear"
    output_activation: str = "relu"
    n_mels: int = 40
    n_mfcc: int = 20
    dropout: float = 0.0        # after hidden layers at least `dropout_min_width` wide (training only)
    dropout_min_width: int = 256
    input_dropout: float = 0.0  # denoising: zero random input bins while training
    # pitch conditioning (model format 2): the decoder takes z and the pitch (MIDI note, float)
    conditioning: str = "none"
    pitch_decoder: str = "harmonic"  # harmonic: envelope x harmonic comb + noise; mlp: plain
    pitch_center: float = 60.0
    pitch_scale: float = 24.0
    n_noise_bands: int = 64
    # noise floor bands: "mel" (narrow at low frequencies: a band can look like a partial)
    # or "wide" (centres even on log(1 + f / 4 kHz): about 120 Hz apart at the bottom)
    noise_scale: str = "mel"
    # harmonic decoder's envelope: "bins" (one value per bin) or "smooth" (points spaced
    # evenly in log frequency, plus a bounded gain per harmonic for the first harmonics)
    envelope: str = "bins"
    n_envelope_points: int = 72
    n_harmonic_gains: int = 24
    harmonic_gain_range: float = 0.75
    # smooth envelope: harmonic k (1, 2, ...) never falls below harmonic_floors[k-1] x the
    # strongest of the first `n_floor_harmonics` (empty: no floor); keeps the pitch unambiguous
    harmonic_floors: list = field(default_factory=list)
    n_floor_harmonics: int = 8
    n_fft: int = 0  # 0: 2 * (n_bins - 1)

    def __post_init__(self) -> None:
        if self.append not in APPEND_OPTIONS:
            raise TrainingError(f"append={self.append!r} is unknown; choose one of {APPEND_OPTIONS}")
        for key in ("activation", "latent_activation", "output_activation"):
            if getattr(self, key) not in ACTIVATIONS:
                raise TrainingError(f"{key}={getattr(self, key)!r} is unknown; choose one of "
                                    f"{ACTIVATIONS}")
        if self.output_activation not in ("relu", "softplus", "sigmoid"):
            raise TrainingError(f"output_activation={self.output_activation!r} can go negative; "
                                "the decoder must output magnitudes >= 0: use relu, softplus or "
                                "sigmoid")
        for key in ("dropout", "input_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise TrainingError(f"{key}={getattr(self, key)} must be in [0, 1)")
        if self.conditioning not in CONDITIONING:
            raise TrainingError(f"conditioning={self.conditioning!r} is unknown; choose one of "
                                f"{CONDITIONING}")
        if self.pitch_decoder not in PITCH_DECODERS:
            raise TrainingError(f"pitch_decoder={self.pitch_decoder!r} is unknown; choose one of "
                                f"{PITCH_DECODERS}")
        if self.envelope not in ("bins", "smooth"):
            raise TrainingError(f"envelope={self.envelope!r} is unknown; choose bins or smooth")
        if not 0.0 <= self.harmonic_gain_range < 1.0:
            raise TrainingError(f"harmonic_gain_range={self.harmonic_gain_range} must be in [0, 1)")
        if self.n_fft == 0:
            self.n_fft = 2 * (self.n_bins - 1)
        if self.latent_dim < 1:
            raise TrainingError(f"latent_dim={self.latent_dim} must be >= 1")
        self.encoder_widths = [int(w) for w in self.encoder_widths]
        self.decoder_widths = [int(w) for w in self.decoder_widths]
        if any(w < 1 for w in self.encoder_widths + self.decoder_widths):
            raise TrainingError("layer widths must all be >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "linear": nn.Identity(), "softplus": nn.Softplus(),
            "sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "elu": nn.ELU()}[name]


def mel_filterbank(n_bins: int, sample_rate: int, n_mels: int) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), float32 [n_bins, n_mels], area-normalised."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
    edges = mel_to_hz(np.linspace(hz_to_mel(20.0), hz_to_mel(sample_rate / 2.0), n_mels + 2))
    fb = np.zeros((n_bins, n_mels))
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        up = (freqs - lo) / max(mid - lo, 1e-9)
        down = (hi - freqs) / max(hi - mid, 1e-9)
        fb[:, i] = np.maximum(0.0, np.minimum(up, down))
        s = fb[:, i].sum()
        if s > 0:
            fb[:, i] /= s
    return fb.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II as a matrix, float32 [n_in, n_out] (x @ D)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    d = np.cos(np.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d.astype(np.float32)


class FeatureAppend(nn.Module):
    """Concatenate the magnitude frame with the configured extra features."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.mode = cfg.append
        if self.mode == "mfcc":
            self.register_buffer("mel", torch.from_numpy(
                mel_filterbank(cfg.n_bins, cfg.sample_rate, cfg.n_mels)))
            self.register_buffer("dct", torch.from_numpy(dct_matrix(cfg.n_mels, cfg.n_mfcc)))

    @staticmethod
    def n_extra(cfg: ModelConfig) -> int:
        n = cfg.n_bins
        return {"none": 0, "diff1": n - 1, "diff2": n - 2, "both": 2 * n - 3,
                "mfcc": cfg.n_mfcc}[cfg.append]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        if self.mode == "mfcc":
            return torch.cat([x, torch.log(x @ self.mel + 1e-6) @ self.dct], dim=1)
        d1 = x[:, 1:] - x[:, :-1]
        if self.mode == "diff1":
            return torch.cat([x, d1], dim=1)
        d2 = d1[:, 1:] - d1[:, :-1]
        if self.mode == "diff2":
            return torch.cat([x, d2], dim=1)
        return torch.cat([x, d1, d2], dim=1)


def _mlp(sizes: list[int], *, bias: bool, hidden: str, last: str, dropout: float = 0.0,
         dropout_min_width: int = 256) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        lin = nn.Linear(sizes[i], sizes[i + 1], bias=bias)
        act = hidden if i < len(sizes) - 2 else last
        if act in ("relu", "elu"):
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        else:
            nn.init.xavier_normal_(lin.weight)
        if bias:
            nn.init.zeros_(lin.bias)
        layers += [lin, _act(act)]
        if dropout > 0 and i < len(sizes) - 2 and sizes[i + 1] >= dropout_min_width:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.features = FeatureAppend(cfg)
        self.input_dropout = nn.Dropout(cfg.input_dropout) if cfg.input_dropout > 0 else None
        sizes = [cfg.n_bins + FeatureAppend.n_extra(cfg), *cfg.encoder_widths, cfg.latent_dim]
        self.net = _mlp(sizes, bias=cfg.bias, hidden=cfg.activation, last=cfg.latent_activation,
                        dropout=cfg.dropout, dropout_min_width=cfg.dropout_min_width)

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        if self.input_dropout is not None and self.training:
            magnitude = self.input_dropout(magnitude) * (1.0 - self.input_dropout.p)
        return self.net(self.features(magnitude))


class Decoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        sizes = [cfg.latent_dim, *cfg.decoder_widths, cfg.n_bins]
        self.net = _mlp(sizes, bias=cfg.bias, hidden=cfg.activation, last=cfg.output_activation,
                        dropout=cfg.dropout, dropout_min_width=cfg.dropout_min_width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def hann_lobe(d: torch.Tensor) -> torch.Tensor:
    """Magnitude of a Hann window's spectrum ``d`` bins from its centre, normalised to 1
    at 0 (0.5 at +-1, 0 beyond +-2: the main lobe, side lobes left out)."""
    ad = d.abs()
    den = math.pi * d * (1.0 - d * d)
    safe = torch.where(den.abs() < 1e-9, torch.ones_like(den), den)
    w = torch.sin(math.pi * d) / safe
    w = torch.where(ad < 1e-4, torch.ones_like(w), w)
    w = torch.where((ad - 1.0).abs() < 1e-4, torch.full_like(w, 0.5), w)
    return torch.where(ad < 2.0, w.abs(), torch.zeros_like(w))


LOBE_STEPS = 1024  # lobe table points per bin


def hann_lobe_table(steps: int = LOBE_STEPS) -> np.ndarray:
    """``hann_lobe`` tabulated at ``0, 1/steps, ..., 2`` bins plus one zero past the end
    (float32, 2 * steps + 2 values): read with linear interpolation it matches the formula
    within 1e-6, in a handful of ONNX operators with no ``Where``."""
    d = torch.arange(2 * steps + 2, dtype=torch.float64) / steps
    return hann_lobe(d).to(torch.float32).numpy()


def log_basis(n_points: int, n_bins: int, sample_rate: int, f_lo: float = 30.0) -> np.ndarray:
    """Linear interpolation [n_points, n_bins] between points spaced evenly in log
    frequency from ``f_lo`` to Nyquist (held flat below ``f_lo``): a smooth envelope."""
    freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
    pos = np.log2(np.maximum(freqs, f_lo) / f_lo) / np.log2(sample_rate / 2.0 / f_lo)
    x = pos * (n_points - 1)
    i0 = np.clip(np.floor(x).astype(int), 0, n_points - 2)
    frac = x - i0
    basis = np.zeros((n_points, n_bins))
    basis[i0, np.arange(n_bins)] = 1.0 - frac
    basis[i0 + 1, np.arange(n_bins)] += frac
    return basis.astype(np.float32)


def noise_basis(n_bands: int, n_bins: int, sample_rate: int, scale: str = "mel") -> np.ndarray:
    """Triangular bands [n_bands, n_bins], centres spaced evenly on a mel scale (or, for
    ``scale="wide"``, on log(1 + f / 4000)) from 0 Hz to Nyquist, summing to 1 in every
    bin: a smooth noise floor with no pitch of its own."""
    brk = 700.0 if scale == "mel" else 4000.0

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / brk)

    def mel_to_hz(m):
        return brk * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
    centres = mel_to_hz(np.linspace(0.0, hz_to_mel(sample_rate / 2.0), n_bands))
    basis = np.zeros((n_bands, n_bins))
    for i, c in enumerate(centres):
        if i > 0:
            lo = centres[i - 1]
            m = (freqs >= lo) & (freqs <= c)
            basis[i, m] = (freqs[m] - lo) / (c - lo)
        else:
            basis[i, freqs <= c] = 1.0
        if i < n_bands - 1:
            hi = centres[i + 1]
            m = (freqs >= c) & (freqs <= hi)
            basis[i, m] = (hi - freqs[m]) / (hi - c)
    return (basis / np.maximum(basis.sum(axis=0, keepdims=True), 1e-12)).astype(np.float32)


class PitchDecoder(nn.Module):
    """Decoder conditioned on pitch (MIDI note number, float): ``forward(z, pitch)``.

    ``harmonic``: an MLP of (z, normalised pitch) gives a spectral envelope over the
    bins and a smooth noise floor (``n_noise_bands`` mel bands); the magnitude is
    envelope x comb + noise, where the comb is a Hann main lobe at every harmonic of the
    pitch. The partials sit exactly on the harmonics of the pitch asked for, whatever the
    latent: the knobs shape the envelope (timbre), the key sets the pitch.
    ``mlp``: the plain decoder with the normalised pitch appended to its input.

    ``envelope="smooth"``: the envelope is given at ``n_envelope_points`` spaced evenly in
    log frequency (about 7 per octave) and interpolated, times a gain per harmonic for
    the first ``n_harmonic_gains`` harmonics, each within ``1 +- harmonic_gain_range``.
    A smooth envelope cannot pick out every third harmonic (above the first few, two
    neighbouring harmonics share one envelope segment) and the bounded gains keep odd and
    even harmonics within 17 dB of each other: any latent keeps a clear harmonic series,
    so a knob at a random position cannot make the note read an octave or a twelfth off.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kind = cfg.pitch_decoder
        self.center, self.scale = float(cfg.pitch_center), float(cfg.pitch_scale)
        self.cond_range: tuple[float, float] | None = None  # see clamp_conditioning
        widths = list(cfg.decoder_widths)
        if self.kind == "mlp":
            self.net = _mlp([cfg.latent_dim + 1, *widths, cfg.n_bins], bias=cfg.bias,
                            hidden=cfg.activation, last=cfg.output_activation)
            return
        self.trunk = _mlp([cfg.latent_dim + 1, *widths], bias=cfg.bias, hidden=cfg.activation,
                          last=cfg.activation)
        self.smooth = cfg.envelope == "smooth"
        n_env = cfg.n_envelope_points if self.smooth else cfg.n_bins
        self.envelope = nn.Linear(widths[-1], n_env, bias=cfg.bias)
        self.noise = nn.Linear(widths[-1], cfg.n_noise_bands, bias=cfg.bias)
        nn.init.xavier_normal_(self.envelope.weight)
        if self.smooth:
            self.register_buffer("env_basis", torch.from_numpy(
                log_basis(cfg.n_envelope_points, cfg.n_bins, cfg.sample_rate)))
            self.gains = nn.Linear(widths[-1], cfg.n_harmonic_gains, bias=cfg.bias)
            nn.init.xavier_normal_(self.gains.weight, gain=0.1)
            self.n_gains = cfg.n_harmonic_gains
            self.gain_range = float(cfg.harmonic_gain_range)
            floors = [float(v) for v in cfg.harmonic_floors]
            self.floored = bool(floors)
            self.n_floor = int(cfg.n_floor_harmonics)
            table = torch.zeros(len(floors) + 2)
            table[1:len(floors) + 1] = torch.tensor(floors)
            self.register_buffer("floor_table", table, persistent=False)
        nn.init.xavier_normal_(self.noise.weight, gain=0.1)
        self.out_act = _act(cfg.output_activation)
        self.register_buffer("bins", torch.arange(cfg.n_bins, dtype=torch.float32)[None, :])
        self.register_buffer("lobe_table", torch.from_numpy(hann_lobe_table()), persistent=False)
        self.register_buffer("basis", torch.from_numpy(
            noise_basis(cfg.n_noise_bands, cfg.n_bins, cfg.sample_rate, cfg.noise_scale)))
        self.bin_hz = cfg.sample_rate / cfg.n_fft

    def _harmonics(self, pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[batch, 1] MIDI pitch -> (h, voiced, lobe), each [batch, n_bins]: the nearest
        harmonic number of every bin (a whole number, as float), 1 where that harmonic is
        the 1st or above (0 for the 0th), and the Hann main lobe (peak 1) of that harmonic
        at the bin, 0 where the nearest harmonic is the 0th.

        Written for the exported graph as much as for training: the lobe is read from a
        table by linear interpolation, tables are read with ``gather`` (GatherElements:
        onnxruntime's Gather is several times slower on per-bin indices) from a copy
        broadcast by arithmetic (``expand`` exports a dozen shape operators), and masks are
        clamps of the harmonic number: the ONNX decoder has no ``Where``."""
        f0 = 440.0 * torch.pow(2.0, (pitch - 69.0) / 12.0) / self.bin_hz
        ratio = self.bins / f0
        h = torch.round(ratio)
        x = torch.clamp(torch.abs(ratio - h) * f0, max=2.0) * float(LOBE_STEPS)
        i0f = torch.floor(x)
        frac = x - i0f
        i0 = i0f.to(torch.int64)
        t = f0 * 0.0 + self.lobe_table  # [batch, table]
        a = torch.gather(t, 1, i0)
        lobe = a + frac * (torch.gather(t, 1, i0 + 1) - a)
        voiced = torch.clamp(h, 0.0, 1.0)
        return h, voiced, lobe * voiced

    def comb(self, pitch: torch.Tensor, gains: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, 1] MIDI pitch -> [batch, n_bins] harmonic comb (Hann lobes, peak 1),
        each lobe times its harmonic's gain (``gains`` [batch, K + 2]: the 0th harmonic,
        harmonics 1..K, and every harmonic above K)."""
        h, _, lobe = self._harmonics(pitch)
        if gains is None:
            return lobe
        return lobe * self._gain_per_bin(h, gains)

    def _harmonic_gains(self, t: torch.Tensor) -> torch.Tensor:
        """Gains [batch, K + 2]: 1 for the 0th harmonic, 1 +- range for harmonics 1..K, 1
        for every harmonic above K (the padding's tanh(0) = 0)."""
        return 1.0 + self.gain_range * torch.tanh(F.pad(self.gains(t), (1, 1)))

    def _gain_per_bin(self, h: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Harmonic ``h``'s gain at every bin, from ``_harmonic_gains``."""
        idx = torch.clamp(h, 0.0, float(self.n_gains + 1)).to(torch.int64)
        return torch.gather(gains, 1, idx)

    def clamp_conditioning(self, lo: float, hi: float) -> None:
        """From now on the MLP sees the pitch clamped to ``lo..hi`` (the trained range)
        while the harmonic comb still takes the pitch as given: a note beyond the range
        keeps the timbre of the range's edge and sounds exactly at its own pitch (the
        export's ``pitch_beyond_range: exact``). Harmonic decoders only."""
        if self.kind != "harmonic":
            raise TrainingError("only a harmonic decoder places its partials by the pitch; "
                                "an mlp decoder cannot clamp its own conditioning")
        self.cond_range = (float(lo), float(hi))

    def forward(self, z: torch.Tensor, pitch: torch.Tensor) -> torch.Tensor:
        cond = pitch if self.cond_range is None else torch.clamp(pitch, *self.cond_range)
        x = torch.cat([z, (cond - self.center) / self.scale], dim=1)
        if self.kind == "mlp":
            return self.net(x)
        t = self.trunk(x)
        env = self.out_act(self.envelope(t))
        noise = self.out_act(self.noise(t)) @ self.basis
        if not self.smooth:
            return env * self.comb(pitch) + noise
        gains = self._harmonic_gains(t)
        if not self.floored:
            return (env @ self.env_basis) * self.comb(pitch, gains) + noise
        # amplitude per bin (envelope x its harmonic's gain), floored over the first
        # harmonics at a fraction of their strongest, then shaped by the Hann lobes
        h, voiced, lobe = self._harmonics(pitch)
        amp = (env @ self.env_basis) * self._gain_per_bin(h, gains)
        low = voiced * torch.clamp(float(self.n_floor + 1) - h, 0.0, 1.0)  # 1 <= h <= n_floor
        top = torch.amax(amp * low, dim=1, keepdim=True)  # amp >= 0
        idx = torch.clamp(h, 0.0, float(self.floor_table.shape[0] - 1)).to(torch.int64)
        fl = torch.gather(top * 0.0 + self.floor_table, 1, idx)
        amp = torch.maximum(amp, fl * top)
        return amp * lobe + noise


class Autoencoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = PitchDecoder(cfg) if cfg.conditioning == "pitch" else Decoder(cfg)

    @property
    def conditioned(self) -> bool:
        return self.cfg.conditioning == "pitch"

    def decode(self, z: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditioned:
            if pitch is None:
                raise TrainingError("a pitch-conditioned decoder needs the pitch of every frame")
            return self.decoder(z, pitch.reshape(-1, 1))
        return self.decoder(z)

    def forward(self, x: torch.Tensor, pitch: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encoder(x), pitch)

    def l2(self) -> torch.Tensor:
        """Sum of squared trainable parameters (the thesis's ||theta||^2 term)."""
        return sum((p * p).sum() for p in self.parameters() if p.requires_grad)
