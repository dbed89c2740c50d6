"""The streaming synthesis engine: latent -> decoder -> pitch -> phase -> audio.

Per hop (``hop_length`` samples at the output rate):

1. control events queued since the last hop are applied (note on/off, knobs...);
2. the latent is smoothed (one-pole, ``smoothing_ms``) and decoded with **one**
   batched decoder call (all voices share the global latent, so one decode per
   hop; nothing is decoded while the smoothed latent does not move);
3. the frame is loudness-normalised (the decoder's frames are per-frame
   normalised, so the engine sets a fixed RMS per voice, ``-20 dBFS`` at full
   velocity and ``gain_db = 0``) and moved to each voice's note
   (:mod:`daemon.core.pitch`);
4. phase per voice by streaming RTPGHI (:mod:`daemon.core.phase`), inverse FFT,
   synthesis window, overlap-add per voice;
5. each voice times its velocity x envelope gain, interpolated per sample from
   hop to hop (no zipper noise), summed; master gain (``gain_db``, ramped);
6. DC blocker, soft limiter, clamp to +/-1; NaN/Inf -> silence and a mute latch
   that fades back in.

``render(n)`` returns any number of samples: hops are rendered into a one-hop
buffer and handed out from there, so output does not depend on the block sizes
the caller asks for.

Output rate: the model's ``n_fft`` and ``hop_length`` are used *at the output
rate*; the rate ratio is folded into the pitch stage's frequency mapping (see
:mod:`daemon.core.pitch`), so a 44.1 kHz model plays in tune on a 48 kHz device.
Hops are then ``hop_length / sample_rate`` s long.

Latency: ``hop_length * (1 + lookahead)`` samples from a control event to the
first sample it affects, at most, plus the caller's buffering.

Threading: control methods (``note_on`` ... ``set_model``) may be called from
any one control thread; they append to a queue (``collections.deque``: atomic
append/popleft) and return at once. ``render`` runs on the audio side and is the
only place that touches DSP state.

Overload: at most ``NOTE_EVENTS_PER_HOP`` note events (on and off), of which at most
``NOTE_ONS_PER_HOP`` note-ons, are applied per hop (a note-on costs a new voice's phase
priming). The excess is coalesced per key — the latest state wins (a note-on and its
note-off in the same overflow cancel; a held key gets its note-off) — and applied,
oldest key first, at the next hops; an all-notes-off drops what is pending. Other events
(knobs, pedal, bend, parameters) are all applied in order each hop (cheap; the latest
value per target is what remains). Rendered voices are capped at the polyphony,
releases included (:mod:`daemon.core.voices`). ``stats.cpu_load`` is the render time of the
hops over their duration (about the last second), measured here, where the work is.
"""

from __future__ import annotations

import collections
import enum
import math
import time

import numpy as np

from daemon.core.dsp import DCBlocker, OverlapAdd, SafetyLimiter, one_pole_coefficient
from daemon.core.phase import RTPGHI
from daemon.core.pitch import PITCH_MODES, PitchStage, estimate_f0, midi_to_hz
from daemon.core.voices import VoiceBank

__all__ = ["Engine", "EngineStats", "HopSettings", "Ev", "PARAMS", "NOTE_EVENTS_PER_HOP", "NOTE_ONS_PER_HOP"]

PARAMS = {
    # name: (default, low, high)
    "gain_db": (0.0, -120.0, 24.0),
    "shift_bins": (0.0, -4096.0, 4096.0),
    "attack_ms": (5.0, 0.0, 20000.0),
    "decay_ms": (200.0, 0.0, 20000.0),
    "sustain_level": (0.8, 0.0, 1.0),
    "release_ms": (300.0, 0.0, 20000.0),
    "smoothing_ms": (20.0, 0.0, 10000.0),
    "velocity_curve": (1.0, 0.05, 10.0),
    "shift_wrap": (0.0, 0.0, 1.0),
}
VOICE_RMS = 0.1  # -20 dBFS per voice at full velocity, gain_db 0
NOTE_EVENTS_PER_HOP = 32  # note-ons + note-offs applied per hop at most (the rest coalesced)
NOTE_ONS_PER_HOP = 4  # of which note-ons: each primes a new voice (~0.5-1 ms at 4096/1024)
_LOAD_WINDOW_S = 1.0  # cpu_load: render time / audio time over about this long
_SPARE_ROWS = 8  # rows for voices fading out after a steal


class EngineStats:
    """Plain counters for a status line (read from any thread; approximate).

    ``active_voices`` (rows sounding or fading), ``hops_rendered``, ``last_hop_ms`` /
    ``max_hop_ms`` (wall time of one hop's rendering, ms), ``decodes`` (decoder calls),
    ``stolen_voices``, ``nonfinite_blocks`` (hops muted for NaN/Inf), ``model_switches``,
    ``max_active_voices`` (most rows rendered in one hop), ``coalesced_notes`` (note
    events over the per-hop budget, coalesced per key), ``cpu_load`` / ``cpu_peak``
    (render time over audio time, mean and worst hop, over about the last second).
    """

    __slots__ = ("active_voices", "hops_rendered", "last_hop_ms", "max_hop_ms", "decodes",
                 "stolen_voices", "nonfinite_blocks", "model_switches", "max_active_voices",
                 "coalesced_notes", "cpu_load", "cpu_peak")

    def __init__(self):
        self.active_voices = 0
        self.hops_rendered = 0
        self.last_hop_ms = 0.0
        self.max_hop_ms = 0.0
        self.decodes = 0
        self.stolen_voices = 0
        self.nonfinite_blocks = 0
        self.model_switches = 0
        self.max_active_voices = 0
        self.coalesced_notes = 0
        self.cpu_load = 0.0
        self.cpu_peak = 0.0

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        return f"EngineStats({self.as_dict()})"


class HopSettings:
    """What a core's hop takes from the engine's controls (one object per engine).

    Built by :class:`Engine` and changed only by the events it applies at hop
    boundaries (render side), so a core reads no engine field: ``smooth_c`` (one-pole
    latent smoothing coefficient per hop), ``pitch_mode``, ``reference_note``,
    ``bend`` (semitones, all notes), ``note_bend`` (float64 [128], per key, MPE),
    ``shift_bins`` (a Python float) and ``shift_wrap`` (bool).
    """

    __slots__ = ("smooth_c", "pitch_mode", "reference_note", "bend", "note_bend", "shift_bins",
                 "shift_wrap")

    def __init__(self, pitch_mode: str, reference_note: int):
        self.smooth_c = 0.0
        self.pitch_mode = pitch_mode
        self.reference_note = int(reference_note)
        self.bend = 0.0
        self.note_bend = np.zeros(128)
        self.shift_bins = PARAMS["shift_bins"][0]
        self.shift_wrap = PARAMS["shift_wrap"][0] >= 0.5


class Ev(enum.IntEnum):
    """Kinds of the control events queued by the control methods: ``(kind, a, b)``.

    ``NOTE (note, velocity)``: velocity 0 is a note-off (the one representation of
    key state: the queue, the per-key coalescing of :meth:`Engine._apply_events`
    and :meth:`Engine._apply` all use it).
    """

    NOTE = 0
    SUSTAIN = 1
    BEND = 2
    NOTE_BEND = 3
    LATENT = 4
    LATENTS = 5
    PARAM = 6
    PITCH_MODE = 7
    ALL_OFF = 8
    POLYPHONY = 9
    MODEL = 10


class _Core:
    """Everything that depends on one decoder: voices, pitch, phase, overlap-add.

    A chain of plan objects, each allocating at construction: latent smoothing and
    decode (:meth:`decode` / :meth:`decode_voices`), :class:`PitchStage`,
    :class:`RTPGHI` (phase and the complex frame), :class:`OverlapAdd`, then the
    voices' gain ramps (:meth:`render_hop`). It reads the controls from the
    :class:`HopSettings` it is given per hop.
    """

    def __init__(self, model, sample_rate: int, rows: int, polyphony: int, lookahead: int, seed: int):
        self.model = model
        self.n_fft = model.n_fft
        self.hop = model.hop_length
        self.n_bins = B = model.n_bins
        self.sr = float(sample_rate)
        self.rows = rows
        self.bin_ratio = model.sample_rate / self.sr
        self.bin_hz_model = model.sample_rate / model.n_fft
        self.hop_ms = 1000.0 * self.hop / self.sr
        self.phase = RTPGHI(self.n_fft, self.hop, rows, lookahead, seed=seed)
        self.ola = OverlapAdd(self.n_fft, self.hop, rows)
        self.pitch = PitchStage(B, rows, bin_ratio=self.bin_ratio, n_fft=self.n_fft, sr_out=self.sr)
        self.voices = VoiceBank(rows, polyphony, self._move)
        self._moves = 0  # row moves so far (a cache key of decode_voices)
        self.conditioned = bool(getattr(model, "conditioned", False))
        if self.conditioned:
            self._init_conditioned(model, rows)
        self.n_prime = max(0, self.n_fft // self.hop - 1)
        # latent
        self.z = model.latent_default.astype(np.float64).copy()
        self.z_target = self.z.copy()
        self._z_in = np.zeros((1, model.latent_dim), np.float32)
        self._z_decoded = np.full(model.latent_dim, np.nan)
        self._dz = np.zeros(model.latent_dim)
        self.frame = np.zeros((1, B), np.float32)
        self.mag = np.zeros(B)
        self.peaks = np.zeros(B)
        self.f0 = 0.0
        self.f0_asked = None
        self.scale = 0.0
        # per voice
        self.ratio = np.ones(rows)
        self.offset = np.zeros(rows)
        self.spec = np.zeros((rows, B), np.complex64)
        self.rows_out = np.zeros((rows, self.hop), np.float32)
        self._dg = np.zeros(rows)
        self._flat_part = np.zeros(self.hop)
        self.ramp = np.arange(1, self.hop + 1) / self.hop
        self.out = np.zeros(self.hop)
        # FIFO of rendered samples (for mixing cores with different hops)
        self._fifo = np.zeros(self.hop)
        self._fifo_pos = self.hop

    def _init_conditioned(self, model, rows: int) -> None:
        """Buffers of the per-voice path of a pitch-conditioned (format 2) decoder.

        Each voice decodes at its own pitch in one batched call. The decoder's frames are
        at the model's rate; played at the output rate every frequency scales by
        ``sr_out / sr_model``, so the pitch asked of the decoder is moved by
        ``12 log2(sr_model / sr_out)`` semitones to compensate. Pitches outside the
        trained range are clamped there and the rest is a residual transposition by the
        pitch stage (as is a ``shift_bins`` offset); the ``tuned`` mode also measures each
        voice's fundamental near the pitch asked for and corrects the residual. A decoder
        whose metadata says ``pitch_beyond_range: exact`` clamps its own conditioning and
        takes every pitch as it is: no residual, no pitch stage.
        """
        B = self.n_bins
        self._rate_st = 12.0 * math.log2(model.sample_rate / self.sr)
        self._zb = np.zeros((rows, model.latent_dim), np.float32)
        self._pb = np.zeros((rows, 1), np.float32)
        self.vframes = np.zeros((rows, B), np.float32)
        self.vmag = np.zeros((rows, B))
        self.vscale = np.zeros(rows)
        self.vhint = np.zeros((rows, B))
        self._vpitch = np.zeros(rows)
        self._vkey = None
        self._pkey = None
        self._pitch1 = PitchStage(B, 1, bin_ratio=1.0, n_fft=self.n_fft, sr_out=self.sr)
        self._r1 = np.ones(1)
        self._o1 = np.zeros(1)
        self._bins_f = np.arange(B, dtype=np.float64)
        self.harmonic = getattr(model, "decoder_kind", "") == "harmonic"
        self.exact_beyond = getattr(model, "pitch_beyond_range", "transpose") == "exact"

    def _move(self, src: int, dst: int) -> None:
        """The voice bank moved row ``src`` into ``dst``: move its DSP state along."""
        self.phase.move(src, dst)
        self.ola.move(src, dst)
        self.pitch.invalidate()
        self._moves += 1

    @property
    def finished(self) -> bool:
        """No voice left and nothing buffered (a faded-out core after a model switch)."""
        return self.voices.n_active == 0 and self._fifo_pos >= self.hop

    # ------------------------------------------------------------------ per hop
    def smooth_z(self, smooth_c: float) -> None:
        """One step of the one-pole latent smoothing toward ``z_target``."""
        z = self.z
        d = self._dz
        np.subtract(self.z_target, z, out=d)
        if smooth_c > 0.0 and float(np.max(np.abs(d))) > 1e-5 * (1.0 + float(np.max(np.abs(z)))):
            d *= 1.0 - smooth_c
            z += d
        else:  # close enough: land exactly, so decoding stops while nothing moves
            z[:] = self.z_target

    def decode(self, smooth_c: float, stats: EngineStats, pitch: float | None = None) -> None:
        """Smooth z and decode the one frame all voices share (format 1; a format-2 model
        in the ``shift``/``off`` modes decodes it at ``pitch``)."""
        self.smooth_z(smooth_c)
        z = self.z
        if np.array_equal(z, self._z_decoded) and (pitch is None or pitch == self.f0_asked):
            return
        self._z_decoded[:] = z
        np.clip(z, -1e6, 1e6, out=self._z_in[0])
        if pitch is None:
            self.model.decode(self._z_in, out=self.frame)
        else:
            self.f0_asked = pitch
            self._pb[0, 0] = pitch
            self.model.decode_pitched(self._z_in, self._pb[:1], out=self.frame)
        stats.decodes += 1
        mag = self.mag
        mag[:] = self.frame[0]
        if not np.isfinite(mag).all():
            np.nan_to_num(mag, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(mag, 0.0, 1e6, out=mag)
        self.peaks[:] = self.pitch.analyse(mag)
        self.f0 = -1.0  # estimated on demand (tuned mode)
        # loudness: RMS of the OLA output of this frame (Parseval, Hann window)
        L = self.n_fft
        energy = 2.0 * float(np.dot(mag, mag)) - mag[0] ** 2 - mag[-1] ** 2
        rms = math.sqrt(max(energy, 0.0) / (L * 0.375 * L))
        rms_min = (4e-3 / L) / math.sqrt(2.0)  # a sinusoid of peak magnitude 1e-3
        self.scale = VOICE_RMS / max(rms, rms_min) if rms > 0.0 else 0.0

    def set_pitch(self, n: int, hs: HopSettings) -> None:
        """Per-voice frequency ratio and offset (output bins) of rows ``0..n-1``."""
        mode, ref_note, bend, shift_bins = hs.pitch_mode, hs.reference_note, hs.bend, hs.shift_bins
        note_bend = hs.note_bend
        ratio = self.ratio
        offset = self.offset
        ref_hz = midi_to_hz(ref_note)
        for i in range(n):
            key = self.voices.voices[i].note
            note = key + bend
            note += note_bend[key]  # per-note bend (MPE); + 0.0 leaves the value exact
            if mode == "transpose":
                ratio[i] = 2.0 ** ((note - ref_note) / 12.0) * self.bin_ratio
                offset[i] = shift_bins
            elif mode == "tuned":
                if self.f0 < 0.0:
                    self.f0 = estimate_f0(self.mag, self.bin_hz_model)
                f0 = self.f0 if self.f0 > 0.0 else ref_hz
                ratio[i] = midi_to_hz(note) / f0 * self.bin_ratio
                offset[i] = shift_bins
            elif mode == "shift":
                ratio[i] = self.bin_ratio
                offset[i] = (midi_to_hz(note) - ref_hz) * self.n_fft / self.sr + shift_bins
            else:  # off
                ratio[i] = self.bin_ratio
                offset[i] = shift_bins

    def decode_voices(self, n: int, hs: HopSettings, stats: EngineStats) -> None:
        """Per-voice frames of a conditioned decoder into ``vmag[:n]`` (with ``vscale``,
        ``vhint``): one batched decode at each voice's pitch; nothing is recomputed while
        latent, pitches and voice rows stay the same."""
        vb = self.voices
        p = self._vpitch[:n]
        nb = hs.note_bend
        for i in range(n):
            key = vb.voices[i].note
            p[i] = key + nb[key]  # per-note bend (MPE); + 0.0 leaves the note exact
        p += hs.bend
        shift = hs.shift_bins
        tuned = hs.pitch_mode == "tuned"
        pkey = (p.tobytes(), n, self._moves, shift)
        key = (self.z.tobytes(), pkey, tuned)
        if key == self._vkey:
            return
        new_pitches = pkey != self._pkey
        self._vkey = key
        self._pkey = pkey
        model = self.model
        q = p + self._rate_st  # the pitch that sounds right at the output rate
        if self.exact_beyond:  # the decoder clamps its own conditioning: no residual
            c = np.clip(q, -24.0, 150.0)
        else:
            c = np.clip(q, model.pitch_min, model.pitch_max)
        np.clip(self.z, -1e6, 1e6, out=self._zb[0])
        self._zb[1:n] = self._zb[0]
        self._pb[:n, 0] = c
        frames = self.vframes[:n]
        model.decode_pitched(self._zb[:n], self._pb[:n], out=frames)
        stats.decodes += 1
        mag = self.vmag[:n]
        mag[:] = frames
        if not np.isfinite(mag).all():
            np.nan_to_num(mag, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(mag, 0.0, 1e6, out=mag)
        # loudness per voice, as decode() does for the shared frame
        L = self.n_fft
        energy = 2.0 * np.einsum("ij,ij->i", mag, mag) - mag[:, 0] ** 2 - mag[:, -1] ** 2
        rms = np.sqrt(np.maximum(energy, 0.0) / (L * 0.375 * L))
        rms_min = (4e-3 / L) / math.sqrt(2.0)
        self.vscale[:n] = np.where(rms > 0.0, VOICE_RMS / np.maximum(rms, rms_min), 0.0)
        # residual: semitones the decoded frame still has to move
        resid = q - c
        if tuned:
            for i in range(n):
                f = estimate_f0(mag[i], self.bin_hz_model, near=midi_to_hz(c[i]))
                if f > 0.0:
                    resid[i] += 12.0 * math.log2(midi_to_hz(c[i]) / f)
        hint = self.vhint[:n]
        if new_pitches:  # exact lobe frequencies (output bins): the harmonics of p
            f0o = (440.0 * L / self.sr) * np.exp2((p - 69.0) / 12.0)
            bins = self._bins_f
            h = np.rint(bins[None, :] / f0o[:, None])
            pos = h * f0o[:, None]
            np.copyto(hint, np.where((h >= 1.0) & (np.abs(bins[None, :] - pos) <= 2.0), pos,
                                     bins[None, :]))
        for i in range(n):
            if abs(resid[i]) < 1e-9 and shift == 0.0:
                continue
            st = self._pitch1
            peaks = st.analyse(mag[i])
            self._r1[0] = 2.0 ** (resid[i] / 12.0)
            self._o1[0] = shift
            moved = st.process(mag[i], peaks, self._r1, self._o1, 1)
            mag[i] = moved[0]
            if shift != 0.0 or not self.harmonic:
                hint[i] = st.freq[0]
                self._pkey = None  # these hints follow the frame: recompute next time

    def render_hop(self, hs: HopSettings, stats: EngineStats) -> np.ndarray:
        """Render the next hop of this core into ``self.out`` (float64).

        Stages: decode (shared frame, or per voice for a conditioned model in the
        transpose/tuned modes) -> voices' envelopes (:meth:`VoiceBank.step`) -> pitch
        (:meth:`set_pitch` + :meth:`PitchStage.process`) -> new voices primed -> phase
        and complex frame (:meth:`RTPGHI.execute_frame`) -> :meth:`OverlapAdd.push_rows`
        -> per-voice gain ramps summed into ``out``.
        """
        per_voice = self.conditioned and hs.pitch_mode in ("transpose", "tuned")
        if per_voice:
            self.smooth_z(hs.smooth_c)
        elif self.conditioned:  # shift/off: one frame decoded at the reference note
            ref = min(max(hs.reference_note + self._rate_st, self.model.pitch_min),
                      self.model.pitch_max)
            self.decode(hs.smooth_c, stats, pitch=ref)
        else:
            self.decode(hs.smooth_c, stats)
        vb = self.voices
        n = vb.step(self.hop_ms)
        out = self.out
        if n == 0:
            out[:] = 0.0
            return out
        if per_voice:
            self.decode_voices(n, hs, stats)
            pitched = self.vmag
            hint = self.vhint if self.harmonic or hs.pitch_mode == "tuned" else None
            gain = self.vscale  # per voice (float64, rounded to float32 once)
        else:
            self.set_pitch(n, hs)
            pitched = self.pitch.process(self.mag, self.peaks, self.ratio, self.offset, n,
                                         wrap=hs.shift_wrap)
            hint = self.pitch.freq
            gain = self.scale  # a Python float: multiplied in float32
        # new voices: start as if the frame had been held (full level at once;
        # the envelope attack is the declick)
        for i in range(n):
            v = vb.voices[i]
            if not v.primed:
                v.primed = True
                self.phase.reset(i)
                self.ola.reset(i)
                if self.n_prime:
                    sl = slice(i, i + 1)
                    self.phase.prime(i, pitched[i], self.n_prime, None if hint is None else hint[i])
                    for _ in range(self.n_prime):
                        self.phase.execute_frame(pitched, self.spec, gain, rows=sl, advance=False,
                                                 freq_hint=hint)
                        self.ola.push_rows(self.spec, sl)
        rows = slice(0, n)
        self.phase.execute_frame(pitched, self.spec, gain, rows=rows, freq_hint=hint)
        y = self.rows_out
        self.ola.push_rows(self.spec, rows, y)
        # sum_v y_v(t) * (g0_v + (g1_v - g0_v) * ramp(t)), as two matrix-vector products
        dg = self._dg[:n]
        np.subtract(vb.g1[:n], vb.g0[:n], out=dg)
        np.dot(vb.g0[:n], y[:n], out=out)
        np.dot(dg, y[:n], out=self._flat_part)
        self._flat_part *= self.ramp
        out += self._flat_part
        if vb.n_knee:  # attacks/releases shorter than a hop: ramp, then hold
            fp = self._flat_part
            for i in range(n):
                k = vb.knee[i]
                if k < 1.0:
                    np.multiply(self.ramp, 1.0 / k, out=fp)
                    np.minimum(fp, 1.0, out=fp)
                    fp -= self.ramp
                    fp *= dg[i]
                    fp *= y[i]
                    out += fp
        return out

    def _prime_new_voices(self, n: int, pitched, gain, hint) -> None:
        """New voices start as if their frame had been held (full level at once; the
        envelope attack is the declick): phase and overlap-add primed with ``n_prime``
        frames. New voices sit in runs of neighbouring rows (a chord, a flood: the rows
        appended this hop); each run is primed in one batch of calls, not one per voice
        (the stages work row by row, so the result is the same)."""
        voices = self.voices.voices
        i = 0
        while i < n:
            if voices[i].primed:
                i += 1
                continue
            j = i
            while j < n and not voices[j].primed:
                v = voices[j]
                v.primed = True
                self.phase.reset(j)
                self.ola.reset(j)
                if self.n_prime:
                    self.phase.prime(j, pitched[j], self.n_prime, None if hint is None else hint[j])
                j += 1
            if self.n_prime:
                run = slice(i, j)
                for _ in range(self.n_prime):
                    self.phase.execute_frame(pitched, self.spec, gain, rows=run, advance=False,
                                             freq_hint=hint)
                    self.ola.push_rows(self.spec, run)
            i = j

    def pull(self, hs: HopSettings, stats: EngineStats, dst: np.ndarray) -> None:
        """Add ``len(dst)`` samples of this core's output to ``dst``."""
        i = 0
        n = dst.shape[0]
        while i < n:
            if self._fifo_pos >= self.hop:
                self._fifo[:] = self.render_hop(hs, stats)
                self._fifo_pos = 0
            k = min(n - i, self.hop - self._fifo_pos)
            dst[i:i + k] += self._fifo[self._fifo_pos:self._fifo_pos + k]
            self._fifo_pos += k
            i += k


class Engine:
    """Streaming synthesis engine (see module docstring and ``docs/contracts.md``).

    Parameters
    ----------
    model : daemon.core.model.DecoderModel
    sample_rate : int
        Output rate in Hz.
    polyphony : int
        Voices sounding at once (oldest stolen beyond it), 1..max_polyphony.
    max_polyphony : int
        Upper bound for :meth:`set_polyphony` (buffers are sized for it).
    lookahead : {0, 1}
        Phase lookahead (1: one more hop of latency, better phase).
    pitch_mode : {'shift', 'transpose', 'tuned', 'off'}
    reference_note : int, optional
        MIDI note the model's frames sound at (default: the model's metadata).
    seed : int
        Seeds the random phases: renders are deterministic.
    """

    def __init__(self, model, *, sample_rate: int, polyphony: int = 8, max_polyphony: int = 64,
                 lookahead: int = 0, pitch_mode: str = "transpose", reference_note: int | None = None,
                 seed: int = 0):
        if not (isinstance(sample_rate, (int, float)) and 8000 <= sample_rate <= 384000):
            raise ValueError(f"sample_rate={sample_rate!r}: must be 8000..384000 Hz")
        if not 1 <= int(max_polyphony) <= 256:
            raise ValueError(f"max_polyphony={max_polyphony!r}: must be 1..256")
        if not 1 <= int(polyphony) <= int(max_polyphony):
            raise ValueError(f"polyphony={polyphony!r}: must be 1..max_polyphony ({max_polyphony})")
        if lookahead not in (0, 1):
            raise ValueError(f"lookahead={lookahead!r}: must be 0 or 1")
        if pitch_mode not in PITCH_MODES:
            raise ValueError(f"pitch_mode={pitch_mode!r}: must be one of {', '.join(PITCH_MODES)}")
        self.sample_rate = int(sample_rate)
        self.max_polyphony = int(max_polyphony)
        self.lookahead = int(lookahead)
        self.seed = int(seed)
        self.stats = EngineStats()
        self._params = {k: v[0] for k, v in PARAMS.items()}
        # the controls a core's hop reads (changed only by _apply, render side)
        self.settings = HopSettings(pitch_mode, model.reference_note if reference_note is None
                                    else reference_note)
        # control events (kind, a, b), appended by the control methods, applied per hop
        self._events: collections.deque = collections.deque()
        # note events over the per-hop budget: note -> (velocity, 0 = off; pedal at the off)
        self._pending: dict[int, tuple[int, bool]] = {}
        self.note_events_per_hop = NOTE_EVENTS_PER_HOP
        self.note_ons_per_hop = NOTE_ONS_PER_HOP
        self._load_s = 0.0  # render seconds / audio seconds since cpu_load was last set
        self._load_audio_s = 0.0
        self._load_peak = 0.0
        self._n_switches = 0
        self._core = self._make_core(model, int(polyphony))
        # the model the control thread last handed over: control calls validate
        # against it (the render side may not have switched to it yet)
        self._control_model = model
        self._old: list[_Core] = []
        self._update_smoothing()
        self._gain = 10.0 ** (self._params["gain_db"] / 20.0)
        self._dc = DCBlocker(self.sample_rate)
        self._limiter = SafetyLimiter(fade_samples=int(0.05 * self.sample_rate))
        self._alloc_hop(self._core.hop)

    # ------------------------------------------------------------------ setup
    def _make_core(self, model, polyphony: int) -> _Core:
        rows = self.max_polyphony + _SPARE_ROWS
        core = _Core(model, self.sample_rate, rows, polyphony, self.lookahead,
                     self.seed + 7919 * self._n_switches)
        self._apply_env_params(core)
        return core

    def _alloc_hop(self, hop: int) -> None:
        self._hop = hop
        self._mix = np.zeros(hop)
        self._block = np.zeros(hop, np.float32)
        self._pos = hop  # nothing buffered
        self._gramp = np.arange(1, hop + 1) / hop

    def _apply_env_params(self, core: _Core) -> None:
        env = core.voices.env
        p = self._params
        env.attack_ms = p["attack_ms"]
        env.decay_ms = p["decay_ms"]
        env.sustain_level = p["sustain_level"]
        env.release_ms = p["release_ms"]
        core.voices.velocity_curve = p["velocity_curve"]

    def _update_smoothing(self) -> None:
        hops_per_s = self.sample_rate / self._core.hop
        self.settings.smooth_c = one_pole_coefficient(self._params["smoothing_ms"], hops_per_s)

    @property
    def _bend(self) -> float:
        """The applied pitch bend of all notes (semitones)."""
        return self.settings.bend

    @property
    def model(self):
        return self._core.model

    @property
    def hop_length(self) -> int:
        return self._core.hop

    @property
    def latency_samples(self) -> int:
        """Samples from a control event at a hop boundary to its first audible effect."""
        return self._core.hop * (1 + self.lookahead)

    @property
    def idle(self) -> bool:
        """True when no voice sounds (or fades) and no control event is pending."""
        vb = self._core.voices
        return (not self._events and not self._pending and vb.n_active == 0 and not vb.waiting
                and not self._old)

    @property
    def params(self) -> dict:
        """Current values of the ``set_param`` parameters (a copy; applied ones)."""
        return dict(self._params)

    @property
    def latent(self) -> np.ndarray:
        """The current smoothed latent (a copy)."""
        return self._core.z.copy()

    # ------------------------------------------------------------------ control API
    def note_on(self, note: int, velocity: int) -> None:
        note = int(note)
        velocity = int(velocity)
        if not 0 <= note <= 127:
            raise ValueError(f"note={note}: must be a MIDI note 0..127")
        # velocity 0 (or below) is a note-off: Ev.NOTE carries it as velocity 0
        self._events.append((Ev.NOTE, note, min(max(velocity, 0), 127)))

    def note_off(self, note: int) -> None:
        note = int(note)
        if not 0 <= note <= 127:
            raise ValueError(f"note={note}: must be a MIDI note 0..127")
        self._events.append((Ev.NOTE, note, 0))

    def set_sustain(self, on: bool) -> None:
        self._events.append((Ev.SUSTAIN, bool(on), None))

    def set_pitch_bend(self, semitones: float) -> None:
        value = float(semitones)
        if math.isfinite(value):
            self._events.append((Ev.BEND, max(-96.0, min(96.0, value)), None))

    def set_note_bend(self, note: int, semitones: float) -> None:
        """Bend of one key (MPE per-note pitch bend), added to ``set_pitch_bend``'s."""
        note = int(note)
        if not 0 <= note <= 127:
            raise ValueError(f"note={note}: must be a MIDI note 0..127")
        value = float(semitones)
        if math.isfinite(value):
            self._events.append((Ev.NOTE_BEND, note, max(-96.0, min(96.0, value))))

    def set_latent(self, index: int, value: float) -> None:
        dim = self._control_model.latent_dim
        if not 0 <= int(index) < dim:
            raise ValueError(f"latent index {index}: must be 0..{dim - 1} (latent_dim={dim})")
        value = float(value)
        if math.isfinite(value):
            self._events.append((Ev.LATENT, int(index), value))

    def set_latents(self, values) -> None:
        z = np.asarray(values, dtype=np.float64).reshape(-1)
        dim = self._control_model.latent_dim
        if z.shape != (dim,):
            raise ValueError(f"set_latents: got {z.shape[0]} values, the model has latent_dim={dim}")
        if np.all(np.isfinite(z)):
            self._events.append((Ev.LATENTS, z.copy(), None))

    def set_param(self, name: str, value: float) -> None:
        if name.startswith("effect_"):  # the ANNe effect's knobs (a shared mapping): not ours
            return
        if name not in PARAMS:
            raise ValueError(f"set_param: unknown parameter {name!r}; known: {', '.join(PARAMS)}")
        value = float(value)
        if not math.isfinite(value):
            return
        _, lo, hi = PARAMS[name]
        self._events.append((Ev.PARAM, name, min(max(value, lo), hi)))

    def set_pitch_mode(self, mode: str, reference_note: int | None = 60) -> None:
        if mode not in PITCH_MODES:
            raise ValueError(f"pitch mode {mode!r}: must be one of {', '.join(PITCH_MODES)}")
        ref = self._control_model.reference_note if reference_note is None else int(reference_note)
        if not 0 <= ref <= 127:
            raise ValueError(f"reference_note={reference_note}: must be a MIDI note 0..127")
        self._events.append((Ev.PITCH_MODE, mode, ref))

    def all_notes_off(self) -> None:
        self._events.append((Ev.ALL_OFF, None, None))

    def set_polyphony(self, n: int) -> None:
        n = int(n)
        if not 1 <= n <= self.max_polyphony:
            raise ValueError(f"polyphony={n}: must be 1..{self.max_polyphony} (max_polyphony)")
        self._events.append((Ev.POLYPHONY, n, None))

    def set_model(self, model) -> None:
        """Switch decoder at the next hop boundary with a one-hop crossfade.

        The new core (buffers, phase plans) is built here, in the caller's thread.
        Held notes continue on the new model; the latent carries over when the
        latent sizes match, else the new model's default latent is used. Control
        calls made after this one are validated against ``model`` (e.g. a
        ``set_latents`` of the new ``latent_dim``), and parameters, polyphony
        and envelope settings queued before it carry over to the new model.
        """
        self._n_switches += 1
        core = self._make_core(model, self._core.voices.polyphony)
        self._control_model = model
        self._events.append((Ev.MODEL, core, None))

    # ------------------------------------------------------------------ events (render side)
    def _apply_events(self) -> None:
        """Apply the queued control events, note events within the per-hop budget.

        Note events over the budget (``note_events_per_hop``, of which
        ``note_ons_per_hop`` note-ons) are coalesced per key in ``_pending`` (the
        latest state wins; an off remembers whether the pedal was down when it came)
        and applied, oldest key first, at the next hops, before the queue.
        """
        n_all = self.note_events_per_hop
        n_on = self.note_ons_per_hop - len(self._core.voices.waiting)  # those start now
        pending = self._pending
        while pending:  # what was coalesced at earlier hops, oldest key first
            note, (vel, pedal) = next(iter(pending.items()))
            if n_all <= 0 or (vel and n_on <= 0):
                break
            del pending[note]
            n_all -= 1
            if vel:
                n_on -= 1
            self._apply(Ev.NOTE, note, vel, pedal)
        events = self._events
        while events:
            try:
                kind, a, b = events.popleft()
            except IndexError:
                break
            if kind is Ev.NOTE:
                if a in pending or n_all <= 0 or (b and n_on <= 0):
                    pending[a] = (b, self._core.voices.sustain)
                    self.stats.coalesced_notes += 1
                    continue
                n_all -= 1
                if b:
                    n_on -= 1
            self._apply(kind, a, b)

    def _apply(self, kind: Ev, a, b, pedal: bool | None = None) -> None:
        """Apply one control event to the current core and the hop settings.

        ``pedal`` (note-offs coalesced over the budget): whether the sustain pedal
        was down when the note-off came. Never raises into the audio path.
        """
        core = self._core
        hs = self.settings
        try:
            match kind:
                case Ev.NOTE:  # (note, velocity); 0 = off
                    vb = core.voices
                    if b:
                        before = vb.stolen_count
                        vb.note_on(a, b)
                        self.stats.stolen_voices += vb.stolen_count - before
                    else:
                        vb.note_off(a, pedal)
                case Ev.SUSTAIN:
                    core.voices.set_sustain(a)
                case Ev.BEND:
                    hs.bend = a
                case Ev.NOTE_BEND:
                    hs.note_bend[a] = b
                case Ev.LATENT:
                    core.z_target[a] = b
                case Ev.LATENTS:
                    core.z_target[:] = a
                case Ev.PARAM:
                    self._set_param_now(a, b)
                case Ev.PITCH_MODE:
                    hs.pitch_mode = a
                    hs.reference_note = b
                case Ev.ALL_OFF:
                    self._pending.clear()
                    core.voices.all_notes_off()
                    for old in self._old:
                        old.voices.all_notes_off()
                case Ev.POLYPHONY:
                    vb = core.voices
                    before = vb.stolen_count
                    vb.set_polyphony(a)
                    self.stats.stolen_voices += vb.stolen_count - before
                case Ev.MODEL:
                    self._switch_model(a)
        except Exception:  # never raise into the audio path
            pass

    def _set_param_now(self, name: str, value: float) -> None:
        self._params[name] = value
        hs = self.settings
        if name == "smoothing_ms":
            self._update_smoothing()
        elif name == "shift_bins":
            hs.shift_bins = value
        elif name == "shift_wrap":
            hs.shift_wrap = value >= 0.5
        elif name in ("attack_ms", "decay_ms", "sustain_level", "release_ms", "velocity_curve"):
            self._apply_env_params(self._core)

    def _switch_model(self, new: _Core) -> None:
        """Hand the voices to ``new`` (built by :meth:`set_model`); the old core fades
        out over one hop while ``new``'s voices ramp in from 0."""
        old = self._core
        if new.model.latent_dim == old.model.latent_dim:
            new.z[:] = old.z
            new.z_target[:] = old.z_target
        # settings applied since set_model built the new core
        self._apply_env_params(new)
        new.voices.take_over(old.voices)
        old.voices.fade_out_all()
        self._old.append(old)
        self._core = new
        self._update_smoothing()
        self.stats.model_switches += 1
        if new.hop != self._hop:
            self._alloc_hop(new.hop)

    # ------------------------------------------------------------------ render
    def _render_hop(self) -> None:
        t0 = time.perf_counter()
        self._apply_events()
        mix = self._mix
        core = self._core
        mix[:] = core.render_hop(self.settings, self.stats)
        if self._old:
            for old in self._old:
                old.pull(self.settings, self.stats, mix)
            self._old = [c for c in self._old if not c.finished]
        # master gain, ramped across the hop
        g1 = 10.0 ** (self._params["gain_db"] / 20.0)
        g0 = self._gain
        if g1 != g0:
            mix *= g0 + (g1 - g0) * self._gramp
            self._gain = g1
        else:
            mix *= g1
        self._dc.process(mix, mix)
        before = self._limiter.nonfinite_blocks
        self._limiter.process(mix, mix)
        if self._limiter.nonfinite_blocks != before:
            self.stats.nonfinite_blocks += 1
            self._dc.reset()
        self._block[:] = mix
        self._pos = 0
        st = self.stats
        st.hops_rendered += 1
        n = core.voices.n_active
        st.active_voices = n
        if n > st.max_active_voices:
            st.max_active_voices = n
        dt = time.perf_counter() - t0
        ms = dt * 1000.0
        st.last_hop_ms = ms
        if ms > st.max_hop_ms:
            st.max_hop_ms = ms
        # CPU figure: render time over the audio time it produced (~ the last second)
        audio_s = self._hop / self.sample_rate
        self._load_s += dt
        self._load_audio_s += audio_s
        if dt > self._load_peak * audio_s:
            self._load_peak = dt / audio_s
        if self._load_audio_s >= _LOAD_WINDOW_S:
            st.cpu_load = self._load_s / self._load_audio_s
            st.cpu_peak = self._load_peak
            self._load_s = self._load_audio_s = self._load_peak = 0.0

    def render(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """Render the next ``n`` samples into ``out`` [>= n] (or a new float32 [n]); |y| <= 1.

        Call from one (audio-side) thread only. Returns ``out`` (or the new array).
        """
        n = int(n)
        if out is None:
            out = np.empty(n, np.float32)
        i = 0
        while i < n:
            if self._pos >= self._hop:
                self._render_hop()
            k = min(n - i, self._hop - self._pos)
            out[i:i + k] = self._block[self._pos:self._pos + k]
            self._pos += k
            i += k
        return out
