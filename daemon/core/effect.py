"""ANNe, live: the autoencoding sound effect (an input signal through the model's latent).

Per hop (``hop_length`` samples), on the last ``n_fft`` input samples:

1. analysis: periodic Hann window, real FFT (magnitude and the input's own phase);
2. the magnitude frame is normalised to peak 1 (the corpus convention); a frame at
   digital silence (peak below ``SILENCE``) produces no wet frame at all, so silence in
   gives silence out, with no noise floor;
3. ``encoder.onnx`` -> latent ``z``; the controls transform it: each of the knob gains
   multiplies one adjacent sub-vector of ``z`` (the split comes from a preset or a list
   of sizes), then per-neuron offsets are added; ``freeze`` holds the last latent;
4. ``decoder.onnx`` (with a pitch-conditioned model, the input's fundamental tracked
   near the previous one feeds the decoder's pitch: a voice keeps its melody through
   an instrument model) -> magnitude, times the frame's peak;
5. phase: the input's own (the thesis), or streaming RTPGHI (``phase="rtpghi"``);
6. the wet frame's DC bin is zeroed (a DC blocker in the spectral domain: no phase
   shift on the rest, so unity gains stay transparent); inverse FFT, synthesis window,
   overlap-add; dry/wet mix against the input delayed by the same latency; safety
   limiter (identity below 0.9, soft above, |y| <= 1, NaN/Inf muted).

Latency is exactly ``n_fft`` samples (the analysis window): output sample ``k`` is the
input around sample ``k - n_fft``. ``process`` takes and returns blocks of any size and
the output does not depend on the block sizes (streaming equals offline).

The effect runs the model's ``n_fft``/``hop_length`` at the stream's rate; at a rate
other than the model's the spectral envelope the model sees is scaled by the rate ratio
(pitch is unaffected: the output partials sit where the input's were).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from daemon.core.dsp import OverlapAdd, SafetyLimiter, hann

__all__ = ["EffectSettings", "EffectEngine", "EffectControls", "SPLIT_PRESETS", "PHASE_SOURCES", "split_sizes"]

PHASE_SOURCES = ("input", "rtpghi")
# Named ways to cut the latent into adjacent sub-vectors, one per gain knob, as
# proportions of latent_dim (rounded so the sizes add up exactly).
SPLIT_PRESETS = {
    "even": (1, 1, 1, 1, 1),               # five equal parts
    "fine_first": (1, 2, 3, 4, 6),         # small groups first, the widest last
    "coarse_first": (6, 4, 3, 2, 1),
    "centre": (2, 1, 2, 1, 2),             # narrow groups between wide ones
}
GAIN_RANGE = (0.0, 10.0)   # accepted; the thesis's knobs span 0.5 .. 5.5
SILENCE = 1e-7             # frame peak (FFT magnitude) below which nothing is synthesised


def split_sizes(latent_dim: int, split) -> list[int]:
    """Sub-vector sizes: a preset name or proportions -> integers summing to latent_dim."""
    props = SPLIT_PRESETS[split] if isinstance(split, str) else tuple(split)
    if not props or any((not isinstance(p, (int, float))) or p <= 0 for p in props):
        raise ValueError(f"split {split!r}: need a preset ({', '.join(SPLIT_PRESETS)}) or "
                         "positive sizes")
    if len(props) > latent_dim:
        raise ValueError(f"split {split!r}: {len(props)} groups for a latent of {latent_dim}")
    total = float(sum(props))
    edges = np.rint(np.cumsum([0.0, *props]) / total * latent_dim).astype(int)
    sizes = list(np.diff(edges))
    for i, s in enumerate(sizes):  # every group gets at least one neuron
        if s == 0:
            j = int(np.argmax(sizes))
            sizes[j] -= 1
            sizes[i] = 1
    return [int(s) for s in sizes]


@dataclass
class EffectSettings:
    """What the knobs set (mapping ``effect:`` section, ``canne process`` options)."""

    gains: list = field(default_factory=lambda: [1.0] * 5)
    split: object = "even"
    offsets: dict = field(default_factory=dict)   # neuron -> additive offset
    freeze: bool = False
    mix: float = 1.0
    phase: str = "input"
    track_pitch: bool = True

    def validate(self, latent_dim: int) -> None:
        if self.phase not in PHASE_SOURCES:
            raise ValueError(f"phase {self.phase!r}: must be one of {', '.join(PHASE_SOURCES)}")
        if not 0.0 <= float(self.mix) <= 1.0:
            raise ValueError(f"mix {self.mix}: must be 0..1")
        sizes = split_sizes(latent_dim, self.split)
        if len(self.gains) != len(sizes):
            raise ValueError(f"{len(self.gains)} gains for {len(sizes)} latent groups "
                             f"(split {self.split!r})")
        for g in self.gains:
            if not (math.isfinite(float(g)) and GAIN_RANGE[0] <= float(g) <= GAIN_RANGE[1]):
                raise ValueError(f"gain {g}: must be {GAIN_RANGE[0]}..{GAIN_RANGE[1]}")
        for k, v in self.offsets.items():
            if not 0 <= int(k) < latent_dim or not math.isfinite(float(v)):
                raise ValueError(f"offset for neuron {k}: neuron must be 0..{latent_dim - 1}, "
                                 "value finite")


class EffectEngine:
    """Streaming ANNe effect over one mono input.

    Parameters
    ----------
    decoder : daemon.core.model.DecoderModel
    encoder : daemon.core.model.EncoderModel
    sample_rate : int
        Stream rate (Hz).
    settings : EffectSettings, optional
    """

    def __init__(self, decoder, encoder, *, sample_rate: int, settings: EffectSettings | None = None,
                 seed: int = 0):
        self.decoder = decoder
        self.encoder = encoder
        self.sample_rate = int(sample_rate)
        self.n_fft = L = decoder.n_fft
        self.hop = H = decoder.hop_length
        self.n_bins = B = decoder.n_bins
        self.latency_samples = L
        self.conditioned = bool(getattr(decoder, "conditioned", False))
        self._window = hann(L)
        self._in = np.zeros(L)
        self._hop_in = np.zeros(H)
        self._in_fill = 0
        self._out = np.zeros(H, np.float32)
        self._out_pos = 0
        self._mix = np.zeros(H)
        self._ola = OverlapAdd(L, H, 1)
        self._spec = np.zeros((1, B), np.complex64)
        self._frame = np.zeros((1, B), np.float32)
        self._z = np.zeros((1, decoder.latent_dim), np.float32)
        self._zt = np.zeros((1, decoder.latent_dim), np.float32)
        self._pitch = np.full((1, 1), float(decoder.reference_note), np.float32)
        self._dec = np.zeros((1, B), np.float32)
        self._limiter = SafetyLimiter(fade_samples=int(0.05 * self.sample_rate), knee=0.9)
        self._phase = None
        self._seed = seed
        self.frames = 0
        self.silent_frames = 0
        self.set_settings(settings or EffectSettings())

    # ------------------------------------------------------------------ control
    def set_settings(self, settings: EffectSettings) -> None:
        """Apply new settings (validated here, in the caller's thread; one object swap)."""
        settings.validate(self.decoder.latent_dim)
        gain = np.ones(self.decoder.latent_dim, np.float32)
        start = 0
        for g, size in zip(settings.gains, split_sizes(self.decoder.latent_dim, settings.split)):
            gain[start:start + size] = float(g)
            start += size
        offset = np.zeros(self.decoder.latent_dim, np.float32)
        for k, v in settings.offsets.items():
            offset[int(k)] = float(v)
        if settings.phase == "rtpghi" and self._phase is None:
            from daemon.core.phase import RTPGHI

            self._phase = RTPGHI(self.n_fft, self.hop, 1, 0, seed=self._seed)
        self._plan = (gain, offset, bool(settings.freeze), float(settings.mix), settings.phase,
                      bool(settings.track_pitch))
        self.settings = settings

    def set_param(self, name: str, value: float) -> None:
        """A knob: ``effect_gain_<k>`` (1-based group), ``effect_mix``, ``effect_freeze``
        (>= 0.5 is on). Other names (the synthesizer's) are ignored."""
        import copy

        s = copy.copy(self.settings)
        if name.startswith("effect_gain_"):
            k = int(name.rsplit("_", 1)[1]) - 1
            if not 0 <= k < len(s.gains):
                return
            s.gains = list(s.gains)
            s.gains[k] = min(max(float(value), GAIN_RANGE[0]), GAIN_RANGE[1])
        elif name == "effect_mix":
            s.mix = min(max(float(value), 0.0), 1.0)
        elif name == "effect_freeze":
            s.freeze = float(value) >= 0.5
        else:
            return
        self.set_settings(s)

    # ------------------------------------------------------------------ audio
    def process(self, x, out: np.ndarray | None = None) -> np.ndarray:
        """Next ``len(x)`` output samples for input block ``x`` (any length); float32."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        n = x.shape[0]
        if out is None:
            out = np.empty(n, np.float32)
        H = self.hop
        i = 0
        while i < n:
            k = min(n - i, H - self._in_fill)
            self._hop_in[self._in_fill:self._in_fill + k] = x[i:i + k]
            out[i:i + k] = self._out[self._out_pos:self._out_pos + k]
            self._in_fill += k
            self._out_pos += k
            i += k
            if self._in_fill == H:
                self._process_hop()
                self._in_fill = 0
                self._out_pos = 0
        return out

    def _process_hop(self) -> None:
        H, L = self.hop, self.n_fft
        gain, offset, freeze, mix, phase_src, track = self._plan
        buf = self._in
        buf[:-H] = buf[H:]
        np.nan_to_num(self._hop_in, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        buf[-H:] = self._hop_in
        X = np.fft.rfft(buf * self._window)
        mag = np.abs(X)
        peak = float(mag.max())
        spec = self._spec
        self.frames += 1
        if not (peak > SILENCE and math.isfinite(peak)):
            spec[:] = 0.0
            self.silent_frames += 1
            if self._phase is not None:
                self._phase.reset()
        else:
            self._frame[0] = mag / peak
            if not freeze or self.frames == 1:
                self.encoder.encode(self._frame, out=self._z)
            zt = self._zt
            np.multiply(self._z, gain, out=zt)
            zt += offset
            np.clip(zt, -1e6, 1e6, out=zt)
            if self.conditioned:
                if track:
                    self._track_pitch(self._frame[0])
                self.decoder.decode_pitched(zt, self._pitch, out=self._dec)
            else:
                self.decoder.decode(zt, out=self._dec)
            m = np.nan_to_num(self._dec[0].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            np.clip(m, 0.0, 1e6, out=m)
            m *= peak
            if phase_src == "input":
                # the input's phase (frame-start convention, as rfft gives it)
                unit = np.divide(X, mag, out=np.zeros_like(X), where=mag > 0)
                spec[0] = m * unit  # frame-start phase: what OverlapAdd takes
            else:
                ph = self._phase.execute(m[None, :], 1)  # centre phase: signed for OverlapAdd
                spec[0] = m * np.exp(1j * ph[0])
                spec[0] *= self._ola.sign32
            spec[0, 0] = 0.0  # no DC in the wet signal
        wet = self._ola.push(spec, 1)
        dry = buf[:H]  # the input n_fft samples ago: aligned with the wet hop
        y = self._mix
        np.multiply(wet, mix, out=y)
        y += (1.0 - mix) * dry
        self._limiter.process(y, y)
        self._out[:] = y

    def _track_pitch(self, frame: np.ndarray) -> None:
        """Fundamental of the input frame -> the decoder's pitch (held when none found)."""
        from daemon.core.pitch import estimate_f0

        bin_hz = self.sample_rate / self.n_fft
        f = estimate_f0(frame, bin_hz, fmin=40.0, fmax=2100.0)
        if f > 0.0:
            p = 69.0 + 12.0 * math.log2(f / 440.0)
            lo, hi = self.decoder.pitch_min, self.decoder.pitch_max
            self._pitch[0, 0] = min(max(p, lo), hi)


class EffectControls:
    """The synthesizer engine's control API over an :class:`EffectEngine`, so the same
    :class:`daemon.control.mapper.Mapper` (and mapping files) drive the effect: knobs bound to
    ``effect_gain_<k>``, ``effect_mix`` and ``effect_freeze`` act; notes, bend, sustain,
    latent knobs and the synthesizer's parameters have nothing to act on here and are
    ignored."""

    def __init__(self, effect: EffectEngine):
        self.effect = effect
        self.model = effect.decoder  # what a mapping is validated against

    def set_param(self, name: str, value: float) -> None:
        self.effect.set_param(name, value)

    def set_model(self, model) -> None:  # a program change's model: not switched live
        pass

    def set_effect_settings(self, settings: EffectSettings) -> None:
        """A (re)loaded mapping's 'effect:' section."""
        import copy

        self.effect.set_settings(copy.copy(settings))

    def __getattr__(self, name):
        if name.startswith("set_") or name in ("note_on", "note_off", "all_notes_off"):
            return lambda *a, **k: None
        raise AttributeError(name)
