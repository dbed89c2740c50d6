"""canne render: LFOs (and a MIDI clock in the file) run in file time, deterministically;
--spectrogram draws a PNG (matplotlib imported only then)."""

from __future__ import annotations

import sys
from pathlib import Path

import mido
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


from daemon.app.render import render_midi  # noqa: E402

SR = 48000


def _song(path: Path, seconds: float = 4.0, bpm: float = 120.0) -> Path:
    """One note held for ``seconds`` at ``bpm`` (480 ticks a beat)."""
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=int(round(60e6 / bpm)), time=0))
    tr.append(mido.Message("note_on", note=69, velocity=100, time=0))
    tr.append(mido.Message("note_off", note=69, time=int(seconds * bpm / 60 * 480)))
    mid.save(path)
    return path


def _level_period(y: np.ndarray, lo: float, hi: float) -> float:
    """Period (s) of the level's modulation, searched between ``lo`` and ``hi`` Hz."""
    blk = 256
    env = np.array([10 * np.log10(np.mean(y[k:k + blk] ** 2) + 1e-20) for k in range(0, len(y) - blk, blk)])
    t = (np.arange(env.size) * blk + blk / 2) / SR
    keep = t > 1.0
    env, t = env[keep] - env[keep].mean(), t[keep]
    freqs = np.linspace(lo, hi, 4001)
    power = [abs(np.sum(env * np.exp(-2j * np.pi * f * t))) for f in freqs]
    return 1.0 / freqs[int(np.argmax(power))]


def test_free_lfo_renders_in_file_time(model, tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("lfos:\n  - {param: gain, rate: 2, depth: 6}\n")
    song = _song(tmp_path / "s.mid")
    a = render_midi(song, model, sample_rate=SR, mapping_path=m)
    b = render_midi(song, model, sample_rate=SR, mapping_path=m)
    assert np.array_equal(a, b)  # deterministic: no wall clock involved
    assert abs(_level_period(a, 1.5, 2.5) / 0.5 - 1) < 0.01


@pytest.mark.parametrize("bpm", [120.0, 90.0])
def test_synced_lfo_follows_the_files_tempo(model, tmp_path, bpm):
    """MIDI files hold no clock: render makes one from the tempo map (24 pulses a beat)."""
    m = tmp_path / "m.yaml"
    m.write_text("lfos:\n  - {param: gain, beats: 2, depth: 6, tempo: 60}\n")  # tempo: only without a clock
    song = _song(tmp_path / "s.mid", seconds=6.0, bpm=bpm)
    y = render_midi(song, model, sample_rate=SR, mapping_path=m)
    beat = 60.0 / bpm
    assert abs(_level_period(y, 1 / (2.6 * beat), 1 / (1.4 * beat)) / (2 * beat) - 1) < 0.01


def test_no_lfo_render_unchanged_by_ticks(model, tmp_path):
    song = _song(tmp_path / "s.mid")
    m = tmp_path / "m.yaml"
    m.write_text("{}\n")
    assert np.array_equal(render_midi(song, model, sample_rate=SR, mapping_path=m),
                          render_midi(song, model, sample_rate=SR, mapping_path=None))


def test_spectrogram_png(model, tmp_path):
    pytest.importorskip("matplotlib")
    from daemon.app.cli import main

    song = _song(tmp_path / "s.mid", seconds=1.0)
    png = tmp_path / "s.png"
    rc = main(["render", str(song), "-o", str(tmp_path / "s.wav"), "--model", str(model.path),
               "--mapping", "", "--spectrogram", str(png), "--no-progress"])
    assert rc == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10000


def test_spectrogram_refused_before_rendering(model, tmp_path, monkeypatch):
    from daemon.errors import CanneError
    from daemon.adapters.pictures import check_png

    with pytest.raises(CanneError, match="must be a .png"):
        check_png(tmp_path / "x.jpg")
    with pytest.raises(CanneError, match="does not exist"):
        check_png(tmp_path / "nope" / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(CanneError, match="needs matplotlib"):
        check_png(tmp_path / "x.png")
