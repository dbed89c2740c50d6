"""The thesis's corpus design: C-major scales, one note at a time."""

from __future__ import annotations

from training.errors import TrainingError

C_MAJOR_STEPS = (0, 2, 4, 5, 7, 9, 11)

SCALES = {
    # one octave from C4 to C5: 8 notes, the thesis's design
    "one-octave": (60, 1),
    # five octaves from C2 to C7: 36 notes, centred on the one-octave range
    "five-octave": (36, 5),
}


def c_major_notes(scale: str) -> list[int]:
    """MIDI notes of a named C-major scale (ascending, top C included)."""
    if scale not in SCALES:
        raise TrainingError(f"unknown scale {scale!r}; choose one of {sorted(SCALES)}")
    start, octaves = SCALES[scale]
    notes = [start + 12 * o + s for o in range(octaves) for s in C_MAJOR_STEPS]
    notes.append(start + 12 * octaves)
    return notes


def reference_note(scale: str) -> int:
    """The note the scale is centred on for the runtime's pitch stage (C4 for both)."""
    return 60


NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def midi_name(note: int) -> str:
    """MIDI note number to a name, 60 -> 'C4'."""
    return f"{NOTE_NAMES[note % 12]}{note // 12 - 1}"
