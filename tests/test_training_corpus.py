"""Corpus building: STFT frames, silence gate, resampling, patch-level split, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from training import fluid
from training.corpus import build_corpus, load_corpus, patch_split
from training.errors import CorpusError
from training.stft import StftSettings, magnitude_frames

from training_util import TINY_STFT, tiny_corpus


@pytest.mark.parametrize("n_fft,hop", [(256, 64), (512, 128), (1024, 256)],
                         ids=["256-64", "512-128", "1024-256"])
def test_stft_matches_scipy(n_fft, hop):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(8000)
    st = StftSettings(sample_rate=8000, n_fft=n_fft, hop_length=hop)
    ours = magnitude_frames(x, st)
    w = scipy.signal.get_window("hann", n_fft)  # periodic
    _, _, z = scipy.signal.stft(x, window=w, nperseg=n_fft, noverlap=n_fft - hop,
                                boundary="zeros", padded=False)
    ref = np.abs(z.T) * w.sum()  # scipy scales by 1 / sum(window)
    n = min(len(ours), len(ref))
    assert n >= len(x) // hop
    np.testing.assert_allclose(ours[:n], ref[:n], rtol=1e-4, atol=1e-6 * ref.max())


def test_frames_are_normalised_and_finite(tmp_path):
    c = tiny_corpus(tmp_path / "c")
    f = np.asarray(c.frames)
    assert f.shape[1] == TINY_STFT.n_bins
    assert np.all(np.isfinite(f)) and f.min() >= 0.0
    np.testing.assert_allclose(f.max(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("n_patches,seed", [(3, 0), (10, 1), (25, 2), (128, 3)],
                         ids=["3-patches", "10-patches", "25-patches", "128-patches"])
def test_patch_split_is_disjoint_and_complete(n_patches, seed):
    sp = patch_split(n_patches, seed=seed)
    sets = [set(sp[k]) for k in ("train", "val", "test")]
    assert all(sets), "every split must hold at least one patch"
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(range(n_patches))
    if n_patches >= 20:
        assert len(sets[0]) >= 0.7 * n_patches


def test_corpus_frames_never_cross_splits(tmp_path):
    c = tiny_corpus(tmp_path / "c", n_patches=12)
    idx = {k: c.split_index(k) for k in ("train", "val", "test")}
    patches = {k: set(np.unique(c.patch[v]).tolist()) for k, v in idx.items()}
    assert not (patches["train"] & patches["val"])
    assert not (patches["train"] & patches["test"])
    assert not (patches["val"] & patches["test"])
    assert sum(len(v) for v in idx.values()) == len(c.frames)
    again = load_corpus(tmp_path / "c")
    assert again.meta["split"] == c.meta["split"]
    np.testing.assert_array_equal(np.asarray(again.frames), np.asarray(c.frames))


def _write_recordings(folder: Path, sr: int = 22050) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(sr) / sr
    for i, f0 in enumerate((250.0, 500.0, 1000.0)):
        tone = 0.3 * np.sin(2 * np.pi * f0 * t)
        y = np.concatenate([tone, np.zeros(sr)])  # one second of tone, one of silence
        sf.write(folder / f"take{i}.wav", np.stack([y, y], axis=1), sr)  # stereo


def test_folder_corpus_resamples_mixes_and_gates(tmp_path):
    _write_recordings(tmp_path / "rec")
    (tmp_path / "rec" / "notes.txt").write_text("not audio, ignored: wrong extension")
    st = StftSettings(sample_rate=16000, n_fft=512, hop_length=128)
    c = build_corpus(tmp_path / "c", source="folder", input=tmp_path / "rec", stft=st,
                     progress=False)
    assert len(c.meta["patches"]) == 3
    per_patch = [p["n_frames"] for p in c.meta["patches"]]
    # one second of tone = 125 hops; the silent second must be gated away
    assert all(120 <= n <= 135 for n in per_patch), per_patch
    bin_hz = st.sample_rate / st.n_fft
    for p, f0 in zip(c.meta["patches"], (250.0, 500.0, 1000.0)):
        frames = np.asarray(c.frames)[c.patch == p["id"]]
        peak = np.argmax(frames.mean(axis=0)) * bin_hz
        assert abs(peak - f0) <= bin_hz, (p["name"], peak)


def test_empty_folder_error_names_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"empty.*no audio files"):
        build_corpus(tmp_path / "c", source="folder", input=tmp_path / "empty", progress=False)


def test_missing_folder_error(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        build_corpus(tmp_path / "c", source="folder", input=tmp_path / "nope", progress=False)


def test_non_audio_file_error_names_file(tmp_path):
    _write_recordings(tmp_path / "rec")
    (tmp_path / "rec" / "broken.wav").write_text("this is a text file, not a WAV")
    with pytest.raises(CorpusError, match=r"cannot read audio file .*broken\.wav"):
        build_corpus(tmp_path / "c", source="folder", input=tmp_path / "rec",
                     stft=TINY_STFT, progress=False)


def test_too_few_patches_error_suggests_fix(tmp_path):
    rec = tmp_path / "rec"
    _write_recordings(rec)
    (rec / "take1.wav").unlink()
    (rec / "take2.wav").unlink()
    with pytest.raises(CorpusError, match="segment-seconds"):
        build_corpus(tmp_path / "c", source="folder", input=rec, stft=TINY_STFT, progress=False)
    c = build_corpus(tmp_path / "c", source="folder", input=rec, stft=TINY_STFT,
                     segment_seconds=0.25, progress=False)
    assert len(c.meta["split"]["val"]) >= 1


def test_cli_unknown_option_exits_2_with_one_line(capsys):
    from training.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--corpus", "x", "--out", "y", "--bogus-option"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unrecognized arguments: --bogus-option" in err


def test_cli_bad_input_exits_1_with_one_line(tmp_path, capsys):
    from training.cli import main

    (tmp_path / "empty").mkdir()
    rc = main(["corpus", "--source", "folder", "--input", str(tmp_path / "empty"),
               "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "no audio files" in err[0]


def _soundfont_or_skip():
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth is not installed (tests/run.sh installs it)")
    for cand in fluid.DEFAULT_SOUNDFONTS:
        if Path(cand).is_file():
            return Path(cand)
    pytest.skip("no GM SoundFont installed (tests/run.sh installs timgm6mb-soundfont)")


def test_fluidsynth_renders_the_asked_notes(tmp_path):
    sf2 = _soundfont_or_skip()
    sr = 22050
    notes = [60, 67]
    y = fluid.render_program(0, notes, soundfont=sf2, sample_rate=sr, note_s=0.5, tail_s=0.25)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) > 1e-3
    assert len(y) >= int(2 * 0.75 * sr * 0.95)
    st = StftSettings(sample_rate=sr, n_fft=4096, hop_length=1024)
    for k, note in enumerate(notes):
        seg = y[int((k * 0.75 + 0.1) * sr):int((k * 0.75 + 0.45) * sr)]
        spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
        f0 = 440.0 * 2 ** ((note - 69) / 12)
        lo = int(0.8 * f0 * len(seg) / sr)
        peak_hz = (lo + np.argmax(spec[lo:int(1.5 * f0 * len(seg) / sr)])) * sr / len(seg)
        cents = 1200 * np.log2(peak_hz / f0)
        assert abs(cents) < 30, (note, peak_hz)
    mag = magnitude_frames(y, st)
    assert mag.shape[1] == 2049


@pytest.mark.parametrize("scale,first,last,count", [("one-octave", 60, 72, 8),
                                                    ("five-octave", 36, 96, 36)],
                         ids=["one-octave", "five-octave"])
def test_scales_are_c_major(scale, first, last, count):
    from training.scales import c_major_notes

    notes = c_major_notes(scale)
    assert (notes[0], notes[-1], len(notes)) == (first, last, count)
    assert all(n % 12 in (0, 2, 4, 5, 7, 9, 11) for n in notes)


def test_midi_file_plays_the_scale(tmp_path):
    import mido

    fluid.write_scale_midi(tmp_path / "s.mid", 5, [60, 62], note_s=1.0, tail_s=0.5)
    mid = mido.MidiFile(tmp_path / "s.mid")
    msgs = [m for m in mid if not m.is_meta]
    assert msgs[0].type == "program_change" and msgs[0].program == 5
    ons = [m.note for m in msgs if m.type == "note_on" and m.velocity > 0]
    assert ons == [60, 62]
    assert abs(mid.length - 3.0) < 1e-6  # 2 x (1 s note + 0.5 s release)


def test_not_a_soundfont_error_names_file(tmp_path):
    bad = tmp_path / "fake.sf2"
    bad.write_bytes(b"not a soundfont at all")
    with pytest.raises(CorpusError, match=r"fake\.sf2 is not an SF2 file"):
        fluid.find_soundfont(str(bad))
