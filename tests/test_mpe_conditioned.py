"""MPE per-note bend on a pitch-conditioned (format 2) decoder: each voice is decoded at
its own bent pitch. Uses test_conditioned's known decoder (exported through the real path)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import mido  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from harmonic_model import cents, measure_f0, midi_to_hz  # noqa: E402
from test_conditioned import corpus_dir, known_dir  # noqa: E402,F401  (fixtures)

from daemon.core.engine import Engine  # noqa: E402
from daemon.control.mapper import Mapper  # noqa: E402
from daemon.control.mapping import load_mapping_text  # noqa: E402
from daemon.core.model import DecoderModel  # noqa: E402


@pytest.mark.parametrize("sr", [44100, 48000])
def test_conditioned_voices_bent_in_opposite_directions(known_dir, sr):  # noqa: F811
    dec = DecoderModel(known_dir)
    assert dec.conditioned
    engine = Engine(dec, sample_rate=sr, polyphony=4, seed=5)
    mapper = Mapper(load_mapping_text("mpe: lower\nnotes: {pitch_mode: transpose}\nparams: {attack: 5}\n", dec),
                    engine)
    mapper.handle(mido.Message("note_on", channel=1, note=57, velocity=100))
    mapper.handle(mido.Message("note_on", channel=2, note=64, velocity=100))
    engine.render(int(0.2 * sr))
    up, down = 512, -1024  # +3.0004 and -6.0 semitones of 48
    for k in range(1, 9):
        mapper.handle(mido.Message("pitchwheel", channel=1, pitch=up * k // 8))
        mapper.handle(mido.Message("pitchwheel", channel=2, pitch=down * k // 8))
        engine.render(engine.hop_length)
    engine.render(int(0.2 * sr))
    y = engine.render(2 * sr).astype(np.float64)
    ta, tb = 57 + up / 8191 * 48, 64 + down / 8192 * 48
    ca = cents(measure_f0(y, sr, midi_to_hz(ta), search=0.03), midi_to_hz(ta))
    cb = cents(measure_f0(y, sr, midi_to_hz(tb), search=0.03), midi_to_hz(tb))
    print(f"MPE format 2 at {sr}: {ca:+.3f} {cb:+.3f} cents")
    assert abs(ca) <= 5.0 and abs(cb) <= 5.0, (ca, cb)
