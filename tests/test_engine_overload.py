"""Overload policy of the engine (issue 9): per-hop note budget, coalescing, voice cap.

- at most ``NOTE_EVENTS_PER_HOP`` note events, ``NOTE_ONS_PER_HOP`` of them note-ons (new
  voices, including notes that waited for a row), are applied per hop; the excess is
  coalesced per key (latest state wins) and applied at the next hops;
- after any flood the keys that sound are exactly the keys whose last event was a
  note-on (seeded random sequences); nothing hangs after note-offs or an all-notes-off;
- rendered voices never exceed the polyphony, releases included; the release cut to
  free a row is the oldest one and fades out without a click;
- no NaN, |y| <= 1.

Deterministic: the engine is driven by ``render`` calls only (no threads, no clocks).
"""

from __future__ import annotations

import numpy as np
import pytest

from daemon.core.engine import NOTE_EVENTS_PER_HOP, NOTE_ONS_PER_HOP, Engine
from daemon.core.model import DecoderModel
from daemon.core.voices import RELEASE, VoiceBank
from harmonic_model import build_harmonic_decoder, midi_to_hz

SR = 48000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return DecoderModel(build_harmonic_decoder(tmp_path_factory.mktemp("harmonic")))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """1024/256: hops shorter than the 8 ms steal fade, and cheap to render."""
    d = tmp_path_factory.mktemp("harmonic_small")
    return DecoderModel(build_harmonic_decoder(d, n_fft=1024, hop_length=256, n_harmonics=6))


class Counted:
    """Counts what the engine applies to its voice bank, per hop."""

    def __init__(self, engine: Engine):
        self.engine = engine
        vb = engine._core.voices
        self.events = self.starts = 0
        on, off, start = vb.note_on, vb.note_off, vb._start

        def note_on(*a):
            self.events += 1
            return on(*a)

        def note_off(*a):
            self.events += 1
            return off(*a)

        def _start(*a):
            self.starts += 1
            return start(*a)

        vb.note_on, vb.note_off, vb._start = note_on, note_off, _start

    def hop(self) -> tuple[int, int, np.ndarray]:
        """Render one hop; return (note events applied, voices started, samples)."""
        self.events = self.starts = 0
        y = self.engine.render(self.engine.hop_length)
        return self.events, self.starts, y


def sounding(engine: Engine) -> dict[int, float]:
    """key -> velocity gain of the keys held down (sounding, or waiting for a row)."""
    vb = engine._core.voices
    keys = {v.note: v.velocity_gain for v in vb.voices[:vb.n_active]
            if v.held and v.stage < RELEASE and not v.stolen}
    keys.update({w.note: vb.velocity_gain(w.velocity) for w in vb.waiting if w.held})
    return keys


def settled(engine: Engine) -> bool:
    return not engine._events and not engine._pending and not engine._core.voices.waiting


def check_audio(y: np.ndarray) -> None:
    assert np.all(np.isfinite(y)) and float(np.max(np.abs(y), initial=0.0)) <= 1.0


# ------------------------------------------------------------------ budget and coalescing
def test_a_flood_within_one_hop_is_applied_within_the_budget(small):
    e = Engine(small, sample_rate=SR, polyphony=64)
    c = Counted(e)
    for k in range(100):  # 100 note-ons, then 60 of them released again: all in one hop
        e.note_on(k, 1 + k)
    for k in range(40, 100):
        e.note_off(k)
    hops = 0
    while not settled(e):
        events, starts, y = c.hop()
        check_audio(y)
        assert events <= NOTE_EVENTS_PER_HOP and starts <= NOTE_ONS_PER_HOP
        hops += 1
        assert hops < 100
    assert e.stats.coalesced_notes > 0
    c.hop()
    assert sounding(e) == {k: e._core.voices.velocity_gain(1 + k) for k in range(40)}
    assert e.stats.max_active_voices <= 64


def test_a_chord_within_the_budget_starts_at_once_a_bigger_one_within_hops(small):
    chord = (48, 52, 55, 60, 64, 67, 71, 72, 76, 79)
    e = Engine(small, sample_rate=SR, polyphony=16)
    for k in chord[:NOTE_ONS_PER_HOP]:
        e.note_on(k, 100)
    e.render(e.hop_length)
    assert e.stats.coalesced_notes == 0 and len(sounding(e)) == NOTE_ONS_PER_HOP
    e.all_notes_off()
    for k in chord:
        e.note_on(k, 100)
    hops = -(-len(chord) // NOTE_ONS_PER_HOP)
    e.render(hops * e.hop_length)
    assert set(sounding(e)) == set(chord)


def test_note_off_after_its_note_on_in_the_same_overflow_leaves_nothing(small):
    e = Engine(small, sample_rate=SR, polyphony=16)
    e.note_on(30, 100)
    e.render(e.hop_length)  # 30 sounds
    for k in range(40, 40 + NOTE_EVENTS_PER_HOP):  # fill this hop's budget
        e.note_on(k, 100)
        e.note_off(k)
    e.note_on(90, 100)  # over budget: coalesced ...
    e.note_off(90)  # ... and cancelled
    e.note_on(30, 80)  # retrigger of a sounding key, over budget ...
    e.note_off(30)  # ... and its note-off: 30 must not hang
    while not settled(e):
        e.render(e.hop_length)
    e.render(e.hop_length)
    assert sounding(e) == {}


@pytest.mark.parametrize("seed", range(12))
def test_random_floods_end_with_the_last_state_of_every_key(small, seed):
    """Property: keys that sound after the flood == keys whose last event was a note-on
    (with its velocity), whatever the budget split; never more voices than the polyphony."""
    rng = np.random.default_rng(seed)
    poly = 24
    e = Engine(small, sample_rate=SR, polyphony=poly)
    e.set_param("release_ms", float(rng.choice([5.0, 300.0, 3000.0])))
    keys = rng.choice(128, size=poly, replace=False)  # at most `poly` keys: none is stolen
    last: dict[int, int] = {}
    for _ in range(int(rng.integers(3, 12))):
        for _ in range(int(rng.integers(0, 150))):
            k = int(rng.choice(keys))
            r = rng.random()
            if r < 0.45:
                vel = int(rng.integers(1, 128))
                e.note_on(k, vel)
                last[k] = vel
            elif r < 0.9:
                e.note_off(k) if rng.random() < 0.8 else e.note_on(k, 0)
                last[k] = 0
            else:
                e.set_latent(int(rng.integers(0, 8)), float(rng.normal()))
        for _ in range(int(rng.integers(0, 4))):
            y = e.render(int(rng.integers(1, 3 * e.hop_length)))
            check_audio(y)
            assert e.stats.active_voices <= poly
    for _ in range(200):
        if settled(e):
            break
        check_audio(e.render(e.hop_length))
        assert e.stats.active_voices <= poly
    assert settled(e)
    e.render(e.hop_length)
    vg = e._core.voices.velocity_gain
    assert sounding(e) == {k: vg(v) for k, v in last.items() if v > 0}
    assert e.stats.max_active_voices <= poly
    # matching note-offs: nothing hangs
    for k in keys:
        e.note_off(int(k))
    e.render(e.hop_length)
    assert sounding(e) == {}
    for _ in range(int(5 * SR / e.hop_length)):  # the longest release (3 s) ends
        e.render(e.hop_length)
        if e.idle:
            break
    assert e.idle and e.stats.active_voices == 0


@pytest.mark.parametrize("seed", range(4))
def test_more_keys_than_polyphony_never_leave_a_stuck_note(small, seed):
    rng = np.random.default_rng(100 + seed)
    poly = 6
    e = Engine(small, sample_rate=SR, polyphony=poly)
    last: dict[int, int] = {}
    for _ in range(8):
        for _ in range(int(rng.integers(20, 120))):
            k = int(rng.integers(0, 128))
            if rng.random() < 0.6:
                last[k] = int(rng.integers(1, 128))
                e.note_on(k, last[k])
            else:
                last[k] = 0
                e.note_off(k)
        for _ in range(int(rng.integers(1, 4))):
            check_audio(e.render(e.hop_length))
            assert e.stats.active_voices <= poly
    while not settled(e):
        check_audio(e.render(e.hop_length))
        assert e.stats.active_voices <= poly
    e.render(e.hop_length)
    on = {k for k, v in last.items() if v > 0}
    assert set(sounding(e)) <= on  # the oldest may have been stolen, nothing else sounds
    assert len(sounding(e)) <= poly


def test_all_notes_off_after_a_flood_silences_everything(small):
    rng = np.random.default_rng(7)
    e = Engine(small, sample_rate=SR, polyphony=32)
    e.set_sustain(True)
    for _ in range(2000):
        k = int(rng.integers(0, 128))
        e.note_on(k, 100) if rng.random() < 0.7 else e.note_off(k)
    e.render(e.hop_length)
    for _ in range(500):  # more of the flood, then all off, all before the next hop
        e.note_on(int(rng.integers(0, 128)), 90)
    e.set_param("release_ms", 20.0)
    e.all_notes_off()
    y = np.concatenate([e.render(e.hop_length) for _ in range(int(0.5 * SR / e.hop_length))])
    check_audio(y)
    assert e.idle and e.stats.active_voices == 0
    assert np.max(np.abs(y[-e.hop_length:])) < 1e-6  # silence (the DC blocker's tail ~1e-29)


def test_a_late_note_off_is_not_held_by_a_pedal_pressed_after_it(small):
    """Key up, then pedal down, in one overflow: the key is released, not sustained."""
    e = Engine(small, sample_rate=SR, polyphony=16)
    e.note_on(60, 100)
    e.note_on(62, 100)
    e.render(e.hop_length)
    for k in range(70, 70 + NOTE_EVENTS_PER_HOP):  # fill this hop's budget
        e.note_off(k)
    e.note_off(60)  # over budget: pending, pedal up
    e.set_sustain(True)  # applied at once
    e.note_off(62)  # over budget: pending, pedal down -> sustained
    while not settled(e):
        e.render(e.hop_length)
    e.render(e.hop_length)
    held = sounding(e)
    assert 60 not in held and 62 not in held
    vb = e._core.voices
    assert [v.note for v in vb.voices[:vb.n_active] if v.sustained and v.stage < RELEASE] == [62]
    e.set_sustain(False)
    e.render(e.hop_length)
    assert not any(v.sustained or (v.held and v.note in (60, 62)) for v in vb.voices[:vb.n_active])


def test_knob_floods_keep_the_latest_value_per_target(small):
    e = Engine(small, sample_rate=SR, polyphony=8)
    e.set_param("smoothing_ms", 0.0)
    rng = np.random.default_rng(3)
    want = np.array(e.latent)
    for _ in range(20000):
        i = int(rng.integers(0, 8))
        want[i] = float(rng.uniform(-2, 2))
        e.set_latent(i, want[i])
    e.note_on(60, 100)
    check_audio(e.render(2 * e.hop_length))
    np.testing.assert_array_equal(e.latent, want)


# ------------------------------------------------------------------ voice cap
def test_rendered_voices_never_exceed_the_polyphony_releases_included(small):
    rng = np.random.default_rng(11)
    poly = 8
    e = Engine(small, sample_rate=SR, polyphony=poly, max_polyphony=poly)
    e.set_param("release_ms", 5000.0)  # long releases: the old path rendered up to poly + 8
    for _ in range(400):
        for _ in range(int(rng.integers(0, 6))):
            k = int(rng.integers(24, 100))
            e.note_on(k, 100)
            if rng.random() < 0.8:
                e.note_off(k)
        check_audio(e.render(e.hop_length))
        assert e.stats.active_voices <= poly
    assert e.stats.max_active_voices == poly
    assert e._core.voices.cut_count > 0


def test_voice_bank_cap_property():
    """VoiceBank alone, many random sequences: rows <= polyphony at every hop, waiting
    notes start at the next hop, the oldest release is cut first."""
    hop_ms = 1024 / 48000 * 1000
    for seed in range(40):
        rng = np.random.default_rng(seed)
        poly = int(rng.integers(1, 9))
        bank = VoiceBank(poly + 8, poly, lambda s, d: None)
        bank.env.release_ms = float(rng.choice([0.0, 10.0, 500.0, 5000.0]))
        for _ in range(150):
            for _ in range(int(rng.integers(0, 5))):
                k = int(rng.integers(40, 60))
                r = rng.random()
                if r < 0.5:
                    bank.note_on(k, 100)
                elif r < 0.9:
                    bank.note_off(k)
                elif r < 0.95:
                    bank.set_sustain(not bank.sustain)
                else:
                    bank.set_polyphony(poly)
            had_waiting = len(bank.waiting)
            n = bank.step(hop_ms)
            assert n <= poly
            if had_waiting:  # every waiting note got a row freed for it
                assert not bank.waiting or bank.n_active == poly
        bank.env.release_ms = 0.0
        bank.all_notes_off()
        for _ in range(4):
            bank.step(hop_ms)
        assert bank.n_active == 0 and not bank.waiting


def test_the_oldest_release_is_cut_first_and_without_a_click(model):
    """Polyphony 3: A held, B and C releasing (B older); a new note D cuts B, fading it
    out in steal_ms; the largest sample-to-sample step stays that of the steady tones.
    The same scene with a hard cut (steal_ms = 0) breaks the bound: the test can see a
    click."""

    def scene(steal_ms):
        e = Engine(model, sample_rate=SR, polyphony=3)
        e._core.voices.env.steal_ms = steal_ms
        e.set_param("release_ms", 20000.0)
        e.set_param("attack_ms", 20.0)
        for k in (36, 40, 43):  # A = 36 stays held
            e.note_on(k, 127)
            e.render(4 * e.hop_length)
        e.note_off(40)  # B
        e.render(e.hop_length)
        e.note_off(43)  # C
        steady = e.render(8 * e.hop_length)
        e.note_on(31, 127)  # D: cuts B, the oldest release
        y = e.render(4 * e.hop_length)
        notes = sorted(v.note for v in e._core.voices.voices[:e._core.voices.n_active])
        return steady, np.concatenate([steady[-8:], y]), notes, e  # the hop boundary too

    def steps(y):  # largest sample-to-sample step, and largest second difference
        return float(np.max(np.abs(np.diff(y)))), float(np.max(np.abs(np.diff(y, 2))))

    steady, y, notes, e = scene(8.0)
    check_audio(y)
    assert notes == [31, 36, 43]  # B cut; A held and C releasing stay
    assert e.stats.max_active_voices == 3
    (s1, s2), (y1, y2) = steps(steady), steps(y)
    assert y1 <= 1.25 * s1 and y2 <= 2.0 * s2  # measured: 0.8x and 0.8x
    # the bounds catch a click: the same cut without the fade breaks both (measured 1.8x, 18x)
    steady_h, y_h, _, _ = scene(0.0)
    (s1, s2), (y1, y2) = steps(steady_h), steps(y_h)
    assert y1 > 1.25 * s1 and y2 > 2.0 * s2


def test_a_waiting_note_starts_one_hop_later_in_tune(model):
    e = Engine(model, sample_rate=SR, polyphony=1)
    e.note_on(48, 100)
    e.render(4 * e.hop_length)
    e.note_on(57, 100)  # takes 48's row: 48 fades this hop, 57 starts at the next
    y = e.render(SR)
    check_audio(y)
    assert e.stats.stolen_voices == 1 and e.stats.max_active_voices == 1
    tail = y[SR // 2:]
    spec = np.abs(np.fft.rfft(tail * np.hanning(tail.size)))
    hz = np.fft.rfftfreq(tail.size, 1 / SR)
    assert abs(hz[np.argmax(spec)] - midi_to_hz(57)) < 3.0


def test_a_note_waiting_for_a_row_survives_a_model_switch(model, small):
    e = Engine(model, sample_rate=SR, polyphony=1)
    e.note_on(48, 100)
    e.render(4 * e.hop_length)
    e.note_on(57, 100)  # waits for 48's row ...
    e.set_model(small)  # ... when the model changes in the same hop
    check_audio(e.render(SR // 2))
    assert sounding(e) == {57: e._core.voices.velocity_gain(100)}
    assert e.stats.active_voices == 1
    e.note_off(57)
    e.render(SR)
    assert e.idle


def test_cpu_load_is_the_render_time_over_the_audio_time(small):
    e = Engine(small, sample_rate=SR, polyphony=8)
    for k in (48, 52, 55, 60):
        e.note_on(k, 100)
    e.render(int(1.2 * SR))
    s = e.stats
    assert 0.0 < s.cpu_load <= s.cpu_peak
    hop_s = e.hop_length / SR
    assert s.cpu_peak <= s.max_hop_ms / 1000 / hop_s + 1e-9
