"""Corpus: normalised magnitude STFT frames tagged by patch, cached on disk.

A corpus directory holds

- ``frames.npy``  float32 [n_frames, n_bins], each frame normalised to max 1;
- ``patch.npy``   int32 [n_frames], the patch each frame came from;
- ``pitch.npy``   float32 [n_frames], the sounding pitch as a MIDI note number (float),
  measured per note from the score (SoundFont, synth) or tracked per frame (recordings);
- ``voiced.npy``  bool [n_frames], whether the frame has a clear pitch (see
  ``training.labels``; the conditioned trainer uses voiced frames only);
- ``meta.json``   STFT settings, patch list, the patch-level train/val/test split,
  a human description and the reference note.

The split is made over patches, never frames: no patch is in two sets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from training import fluid, labels, scales, synth
from training.errors import CorpusError
from training.stft import StftSettings, magnitude_frames, normalise_and_gate

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".aifc", ".mp3", ".w64",
                    ".caf", ".au", ".snd", ".opus")
SOURCES = ("folder", "soundfont", "synth", "phrases")
# GM programs 112-127 (percussive and sound effects) have no stable pitch: a
# note-conditioned decoder has nothing to learn from them, so the five-octave corpus
# leaves them out unless --programs asks for them (their frames are then labelled
# unvoiced wherever no pitch is found).
PITCHED_PROGRAMS = tuple(range(112))


@dataclass
class Corpus:
    """An in-memory corpus (frames may be a read-only memory map)."""

    frames: np.ndarray
    patch: np.ndarray
    meta: dict
    path: Path | None = None
    pitch: np.ndarray | None = None
    voiced: np.ndarray | None = None

    @property
    def has_pitch(self) -> bool:
        return self.pitch is not None and self.voiced is not None

    @property
    def stft(self) -> StftSettings:
        return StftSettings(**self.meta["stft"])

    def split_index(self, name: str) -> np.ndarray:
        """Frame indices of split ``name`` ('train', 'val' or 'test')."""
        ids = np.asarray(self.meta["split"][name], dtype=np.int64)
        return np.nonzero(np.isin(self.patch, ids))[0]


@dataclass
class _Builder:
    stft: StftSettings
    silence_db: float
    frames: list = field(default_factory=list)
    patch: list = field(default_factory=list)
    pitch: list = field(default_factory=list)
    voiced: list = field(default_factory=list)
    patches: list = field(default_factory=list)

    def add(self, name: str, audio: np.ndarray, *, score: dict | None = None, **info) -> None:
        """Add one patch; ``score`` = {notes, note_s, tail_s} when the notes are known,
        else f0 is tracked from the audio."""
        st = self.stft
        mag = magnitude_frames(audio, st)
        frames, keep = normalise_and_gate(mag, silence_db=self.silence_db)
        pid = len(self.patches)
        bin_hz = st.sample_rate / st.n_fft
        if score == "none":  # not labelled (e.g. polyphonic phrases for an ANNe model)
            pitch = np.full(len(frames), 60.0, np.float32)
            voiced = np.zeros(len(frames), bool)
        elif score is not None:
            idx, clean = labels.score_notes(len(mag), notes=score["notes"],
                                            note_s=score["note_s"], tail_s=score["tail_s"],
                                            sample_rate=st.sample_rate,
                                            hop_length=st.hop_length, n_fft=st.n_fft)
            pitch, voiced, notes_info = labels.refine_scored(frames, idx[keep], clean[keep],
                                                             score["notes"], bin_hz)
            info = {**info, "pitch": notes_info}
        else:
            p_all, v_all = labels.track_folder(audio, sample_rate=st.sample_rate, n_fft=st.n_fft,
                                               hop_length=st.hop_length, n_frames=len(mag))
            pitch, voiced = p_all[keep], v_all[keep]
        self.patches.append({"id": pid, "name": name, "n_frames": int(len(frames)),
                             "n_voiced": int(voiced.sum()), **info})
        if len(frames):
            self.frames.append(frames)
            self.patch.append(np.full(len(frames), pid, dtype=np.int32))
            self.pitch.append(pitch.astype(np.float32))
            self.voiced.append(voiced.astype(bool))


def patch_split(n_patches: int, *, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict:
    """Seeded patch-level split into train/val/test id lists (val and test non-empty)."""
    if n_patches < 3:
        raise CorpusError(f"a corpus needs at least 3 patches for a train/validation/test split, "
                          f"got {n_patches}; add recordings or use --segment-seconds to cut long "
                          "recordings into patches")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_patches)
    n_val = max(1, int(round(fractions[1] * n_patches)))
    n_test = max(1, int(round(fractions[2] * n_patches)))
    n_train = n_patches - n_val - n_test
    if n_train < 1:
        n_train, n_val, n_test = 1, 1, n_patches - 2
    return {"train": sorted(int(i) for i in order[:n_train]),
            "val": sorted(int(i) for i in order[n_train:n_train + n_val]),
            "test": sorted(int(i) for i in order[n_train + n_val:])}


def read_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Read any soundfile-readable file, mix to mono, resample to ``sample_rate``."""
    import soundfile as sf

    try:
        y, sr = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises several types; the message is what matters
        raise CorpusError(f"cannot read audio file {path}: {str(exc).strip().splitlines()[0]}; "
                          "convert it to WAV/FLAC or remove it from the folder") from None
    if y.size == 0:
        raise CorpusError(f"audio file {path} holds no samples; remove it from the folder")
    y = y.mean(axis=1)
    if sr != sample_rate:
        g = int(np.gcd(int(sr), int(sample_rate)))
        y = resample_poly(y, sample_rate // g, int(sr) // g)
    if not np.all(np.isfinite(y)):
        raise CorpusError(f"audio file {path} contains NaN or Inf samples")
    return y


def list_audio_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise CorpusError(f"recordings folder {folder} does not exist; pass --input DIR with "
                          "your WAV/FLAC files")
    if folder.is_file():
        return [folder]
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise CorpusError(f"recordings folder {folder} has no audio files "
                          f"({', '.join(AUDIO_EXTENSIONS[:4])}, ...); put your recordings there")
    return files


def _save(builder: _Builder, out: Path, *, description: str, source: dict, seed: int,
          reference_note: int) -> Corpus:
    if not builder.frames:
        raise CorpusError(f"every frame of the corpus for {out} was below the silence gate "
                          f"({-abs(builder.silence_db)} dB); check the input levels")
    frames = np.concatenate(builder.frames)
    patch = np.concatenate(builder.patch)
    pitch = np.concatenate(builder.pitch)
    voiced = np.concatenate(builder.voiced)
    non_empty = [p["id"] for p in builder.patches if p["n_frames"] > 0]
    sp = patch_split(len(non_empty), seed=seed)
    split = {k: [non_empty[i] for i in v] for k, v in sp.items()}
    meta = {
        "format": 2,
        "description": description,
        "labels": {"pitch": "sounding pitch per frame, MIDI note number (float)",
                   "voiced": "frame has a clear pitch", "n_voiced": int(voiced.sum())},
        "stft": builder.stft.to_dict(),
        "silence_db": -abs(builder.silence_db),
        "reference_note": reference_note,
        "source": source,
        "seed": seed,
        "n_frames": int(len(frames)),
        "patches": builder.patches,
        "split": split,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "frames.npy", frames)
    np.save(out / "patch.npy", patch)
    np.save(out / "pitch.npy", pitch)
    np.save(out / "voiced.npy", voiced)
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return Corpus(frames, patch, meta, out, pitch, voiced)


def build_corpus(out: str | Path, *, source: str, stft: StftSettings | None = None,
                 input: str | Path | None = None, soundfont: str | None = None,
                 scale: str = "one-octave", programs: list[int] | None = None,
                 n_patches: int = 32, note_s: float = 1.0, tail_s: float = 0.5,
                 gain: float = 0.5, silence_db: float = 60.0, segment_seconds: float = 0.0,
                 seed: int = 0, jobs: int = 2, progress: bool = True) -> Corpus:
    """Build a corpus from one source and cache it in directory ``out``.

    ``source``: 'folder' (recordings under ``input``; each file, or each
    ``segment_seconds`` piece of one, is a patch), 'soundfont' (GM ``programs`` playing
    ``scale`` through FluidSynth) or 'synth' (``n_patches`` seeded virtual-analog patches).
    """
    from tqdm import tqdm

    stft = stft or StftSettings()
    out = Path(out)
    b = _Builder(stft, silence_db)
    if source == "folder":
        if input is None:
            raise CorpusError("--source folder needs --input DIR (a folder of recordings)")
        folder = Path(input)
        files = list_audio_files(folder)
        for f in tqdm(files, desc="reading", unit="file", disable=not progress):
            y = read_audio(f, stft.sample_rate)
            rel = str(f.relative_to(folder)) if f != folder else f.name
            if segment_seconds > 0:
                seg = int(segment_seconds * stft.sample_rate)
                for k, i in enumerate(range(0, len(y), seg)):
                    if len(y) - i >= seg // 2:
                        b.add(f"{rel}#{k}", y[i:i + seg], file=rel)
            else:
                b.add(rel, y, file=rel)
        description = f"recordings in {folder.name}: {len(files)} file(s)"
        src = {"kind": "folder", "input": str(folder), "segment_seconds": segment_seconds}
        ref = 60
    elif source == "soundfont":
        sf2 = fluid.find_soundfont(soundfont)
        notes = scales.c_major_notes(scale)
        if programs is None:
            programs = list(PITCHED_PROGRAMS) if scale == "five-octave" else list(range(128))
        programs = list(programs)
        bad = [p for p in programs if not 0 <= p <= 127]
        if bad:
            raise CorpusError(f"GM programs must be 0..127, got {bad}")
        bar = tqdm(total=len(programs), desc="fluidsynth", unit="program", disable=not progress)
        for p, y in fluid.render_programs(programs, notes, soundfont=sf2,
                                          sample_rate=stft.sample_rate, note_s=note_s,
                                          tail_s=tail_s, gain=gain, jobs=jobs, progress=bar):
            b.add(fluid.program_name(p), y, program=p,
                  score={"notes": notes, "note_s": note_s, "tail_s": tail_s})
        bar.close()
        description = (f"{sf2.stem} {scale} C-major scale from {scales.midi_name(notes[0])}, "
                       f"{len(programs)} GM programs")
        src = {"kind": "soundfont", "soundfont": str(sf2), "scale": scale, "notes": notes,
               "programs": programs, "note_s": note_s, "tail_s": tail_s, "gain": gain}
        ref = scales.reference_note(scale)
    elif source == "phrases":
        from training import phrases

        sf2 = fluid.find_soundfont(soundfont)
        programs = list(PITCHED_PROGRAMS) if programs is None else list(programs)
        seconds = max(2.0, segment_seconds or 20.0)
        bar = tqdm(total=len(programs), desc="fluidsynth", unit="program", disable=not progress)
        for p, y in fluid.render_programs(
                programs, [], soundfont=sf2, sample_rate=stft.sample_rate, note_s=note_s,
                tail_s=1.0, gain=gain, jobs=jobs, progress=bar,
                events_for=lambda prog: phrases.phrase(prog, seconds, seed)):
            b.add(fluid.program_name(p), y, program=p, score="none")
        bar.close()
        description = (f"{sf2.stem} improvised phrases ({seconds:g} s each, seeded), "
                       f"{len(programs)} GM programs")
        src = {"kind": "phrases", "soundfont": str(sf2), "programs": programs,
               "seconds": seconds, "gain": gain}
        ref = 60
    elif source == "synth":
        notes = scales.c_major_notes(scale)
        rng = np.random.default_rng(seed)
        for i in tqdm(range(n_patches), desc="synth", unit="patch", disable=not progress):
            p = synth.random_patch(rng, i)
            y = synth.render_patch(p, notes, sample_rate=stft.sample_rate, note_s=note_s,
                                   tail_s=tail_s, seed=seed * 1000 + i)
            b.add(p.name, y, synth=p.to_dict(),
                  score={"notes": notes, "note_s": note_s, "tail_s": tail_s})
        description = f"synthetic virtual-analog {scale} C-major scale, {n_patches} patches"
        src = {"kind": "synth", "scale": scale, "notes": notes, "n_patches": n_patches,
               "note_s": note_s, "tail_s": tail_s}
        ref = scales.reference_note(scale)
    else:
        raise CorpusError(f"unknown corpus source {source!r}; choose one of {SOURCES}")
    return _save(b, out, description=description, source=src, seed=seed, reference_note=ref)


def load_corpus(path: str | Path, *, mmap: bool = True) -> Corpus:
    """Load a corpus directory written by :func:`build_corpus`."""
    path = Path(path)
    meta_f = path / "meta.json"
    if not meta_f.is_file():
        raise CorpusError(f"{path} is not a corpus directory (no meta.json); build one with "
                          "'canne-train corpus --out DIR'")
    meta = json.loads(meta_f.read_text())
    frames = np.load(path / "frames.npy", mmap_mode="r" if mmap else None)
    patch = np.load(path / "patch.npy")
    if frames.shape[0] != patch.shape[0]:
        raise CorpusError(f"corpus {path}: frames.npy and patch.npy disagree in length")
    pitch = voiced = None
    if (path / "pitch.npy").is_file() and (path / "voiced.npy").is_file():
        pitch = np.load(path / "pitch.npy")
        voiced = np.load(path / "voiced.npy")
        if pitch.shape != patch.shape or voiced.shape != patch.shape:
            raise CorpusError(f"corpus {path}: pitch.npy/voiced.npy disagree with patch.npy "
                              "in length; rebuild the corpus")
    return Corpus(frames, patch, meta, path, pitch, voiced)
