"""Render General MIDI programs playing scales through the FluidSynth command line."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mido
import numpy as np

from training.errors import CorpusError

DEFAULT_SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
)

# GM program names (1-based in the GM spec, 0-based here), for human-readable patch ids.
GM_FAMILIES = (
    "piano", "chromatic-percussion", "organ", "guitar", "bass", "strings", "ensemble",
    "brass", "reed", "pipe", "synth-lead", "synth-pad", "synth-effects", "ethnic",
    "percussive", "sound-effects",
)


def find_soundfont(path: str | None = None) -> Path:
    """The SoundFont to use: ``path`` if given, else the first installed default."""
    if path:
        p = Path(path)
        if not p.is_file():
            raise CorpusError(f"SoundFont {p} does not exist; install fluid-soundfont-gm or pass "
                              "--soundfont /path/to/file.sf2")
        with open(p, "rb") as f:
            head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"sfbk":
            raise CorpusError(f"SoundFont {p} is not an SF2 file (no RIFF 'sfbk' header); "
                              "pass a .sf2 file")
        return p
    for cand in DEFAULT_SOUNDFONTS:
        if Path(cand).is_file():
            return Path(cand)
    raise CorpusError("no General MIDI SoundFont found in /usr/share/sounds/sf2; "
                      "apt-get install fluid-soundfont-gm, or pass --soundfont FILE.sf2")


def fluidsynth_binary() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise CorpusError("the 'fluidsynth' command is not on PATH; apt-get install fluidsynth "
                          "(or use --source synth / --source folder)")
    return exe


def write_scale_midi(path: Path, program: int, notes: list[int], *, note_s: float,
                     tail_s: float, velocity: int = 100) -> None:
    """A one-track MIDI file: program change, then each note for ``note_s`` + ``tail_s`` gap."""
    tpb = 480  # ticks per beat; tempo 500000 us/beat -> 960 ticks per second
    per_s = 2 * tpb
    mid = mido.MidiFile(ticks_per_beat=tpb)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    tr.append(mido.Message("program_change", program=program, channel=0, time=0))
    gap = 0
    for m in notes:
        tr.append(mido.Message("note_on", note=m, velocity=velocity, channel=0, time=gap))
        tr.append(mido.Message("note_off", note=m, velocity=0, channel=0,
                               time=int(round(note_s * per_s))))
        gap = int(round(tail_s * per_s))
    tr.append(mido.MetaMessage("end_of_track", time=gap))
    mid.save(str(path))


def write_events_midi(path: Path, program: int, events, *, tail_s: float = 1.0) -> None:
    """A one-track MIDI file: program change, then ``events`` (start_s, dur_s, note, vel)."""
    per_s = 960  # ticks per second at 480 ticks per beat, 120 BPM
    msgs = []
    for start, dur, note, vel in events:
        msgs.append((int(round(start * per_s)), 1, note, vel))
        msgs.append((int(round((start + dur) * per_s)), 0, note, 0))
    msgs.sort()
    mid = mido.MidiFile(ticks_per_beat=480)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("set_tempo", tempo=500000, time=0))
    tr.append(mido.Message("program_change", program=program, channel=0, time=0))
    now = 0
    for tick, on, note, vel in msgs:
        kind = "note_on" if on else "note_off"
        tr.append(mido.Message(kind, note=note, velocity=vel, channel=0, time=tick - now))
        now = tick
    tr.append(mido.MetaMessage("end_of_track", time=int(tail_s * per_s)))
    mid.save(str(path))


def render_program(program: int, notes: list[int], *, soundfont: Path, sample_rate: int,
                   note_s: float = 1.0, tail_s: float = 0.5, gain: float = 0.5,
                   workdir: Path | None = None, events=None) -> np.ndarray:
    """Render one GM program playing ``notes`` (a scale), or ``events`` (start_s, dur_s,
    note, velocity) when given; returns float32 mono at ``sample_rate``."""
    import soundfile as sf

    exe = fluidsynth_binary()
    with tempfile.TemporaryDirectory(dir=workdir) as td:
        mid, wav = Path(td) / "scale.mid", Path(td) / "out.wav"
        if events is not None:
            write_events_midi(mid, program, events, tail_s=tail_s)
        else:
            write_scale_midi(mid, program, notes, note_s=note_s, tail_s=tail_s)
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(sample_rate),
               "-O", "float", "-T", "wav", "-F", str(wav), str(soundfont), str(mid)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0 or not wav.is_file():
            last = ((res.stderr or res.stdout).strip().splitlines() or ["no output"])[-1]
            raise CorpusError(f"fluidsynth failed for program {program} with {soundfont} "
                              f"(exit {res.returncode}): {last}")
        y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise CorpusError(f"fluidsynth wrote {sr} Hz, expected {sample_rate} Hz")
    return y.mean(axis=1)


def program_name(program: int) -> str:
    return f"gm{program:03d}-{GM_FAMILIES[program // 8]}"


def render_programs(programs: list[int], notes: list[int], *, soundfont: Path, sample_rate: int,
                    note_s: float, tail_s: float, gain: float, jobs: int = 2, progress=None,
                    events_for=None):
    """Yield ``(program, audio)`` in program order, rendering ``jobs`` at a time.
    ``events_for(program)``: events to play instead of the scale ``notes``."""
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = [pool.submit(render_program, p, notes, soundfont=soundfont,
                            sample_rate=sample_rate, note_s=note_s, tail_s=tail_s, gain=gain,
                            events=None if events_for is None else events_for(p))
                for p in programs]
        for p, f in zip(programs, futs):
            yield p, f.result()
            if progress is not None:
                progress.update(1)
