"""MIDI-to-sound latency of `canne run`, measured through a JACK dummy server.

One JACK client (this script) both sends the note-on from its process callback —
so the frame it leaves at is known exactly — and records the daemon's output. The
latency of a trial is (first recorded frame with |y| > 1e-4, i.e. -80 dBFS) − (frame
the MIDI byte was sent at). The path measured: JACK MIDI → rtmidi callback → deque →
control loop → Mapper → Engine (next hop) → audio callback → PortAudio → JACK.

Profiles: the default model (4096/1024 at 44.1 kHz) and a 1024/256 harmonic test
decoder (the low-latency profile), both at 48 kHz with JACK periods of 256 frames.
Target (issue 4): ≤ one block + one hop at 4096/1024.

    python benchmarks/latency.py [--trials 30] [--append]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from jack_util import Daemon, JackServer, wait_for  # noqa: E402

RATE = 48000
PERIOD = 256
THRESHOLD = 1e-4


class Probe:
    """JACK client: MIDI out port (events sent in the process callback) + stereo recorder."""

    def __init__(self, server: JackServer, seconds: float = 120.0):
        import jack

        self.client = jack.Client("lat-probe", no_start_server=True, servername=server.name)
        self.midi = self.client.midi_outports.register("out")
        self.ins = [self.client.inports.register(f"in_{i}") for i in range(2)]
        self.n = int(seconds * RATE)
        self.data = np.zeros(self.n, dtype=np.float32)
        self.pos = 0
        self.start_frame = None  # JACK frame time of data[0]
        self.pending: bytes | None = None
        self.sent_frame = None
        self.sent_index = 0
        self.client.set_process_callback(self._process)
        self.client.activate()

    def _process(self, frames):
        if self.start_frame is None:
            self.start_frame = self.client.last_frame_time
        self.midi.clear_buffer()
        if self.pending is not None:
            self.midi.write_midi_event(0, self.pending)
            self.sent_index = self.pos  # recorded index of this period's first frame
            self.sent_frame = self.client.last_frame_time
            self.pending = None
        p = self.pos
        if p + frames <= self.n:
            self.data[p:p + frames] = self.ins[0].get_array()
            self.pos = p + frames

    def send(self, msg: bytes) -> int:
        """Send at the start of the next period; return the recording index of that moment."""
        self.sent_frame = None
        self.pending = msg
        wait_for(lambda: self.sent_frame, 5, 0.001, "the MIDI event to leave")
        return self.sent_index

    def connect_daemon(self):
        ports = wait_for(lambda: [p.name for p in self.client.get_ports("^CANNe-audio", is_audio=True,
                                                                         is_output=True)], 30, 0.05,
                         "CANNe-audio ports")
        self.client.connect(sorted(ports)[0], self.ins[0].name)

    def close(self):
        self.client.deactivate()
        self.client.close()


def measure(model: str, trials: int, label: str, mapping: Path, ahead: int = 0) -> dict:
    server = JackServer(f"canne-lat-{os.getpid()}", period=PERIOD)
    server.start()
    os.environ.update({k: v for k, v in server.env.items() if k.startswith("JACK_")})
    probe = Probe(server)
    daemon = Daemon(["run", "--model", model, "--mapping", str(mapping), "--midi-in", "lat-probe",
                     "--log-level", "WARNING", "--render-ahead", str(ahead)], env=server.env, cwd=REPO)
    lat = []
    skipped = 0
    try:
        wait_for(lambda: any(True for _ in probe.client.get_ports("^CANNe-audio")), 60, 0.05, "daemon")
        probe.connect_daemon()
        wait_for(lambda: probe.client.get_all_connections(probe.midi), 30, 0.05, "the daemon's MIDI input")
        time.sleep(1.0)
        rng = random.Random(1)
        for _ in range(trials):
            time.sleep(0.3 + rng.random() * 0.05)  # random phase against hops and periods
            i0 = probe.send(bytes([0x90, 69, 100]))
            wait_for(lambda: probe.pos > i0 + RATE // 4, 5, 0.005, "recording after the note")
            seg = np.abs(probe.data[i0:i0 + RATE // 4])
            hit = np.flatnonzero(seg > THRESHOLD)
            if np.abs(probe.data[max(0, i0 - PERIOD):i0]).max() > THRESHOLD:
                skipped += 1  # not silent before the note: the trial would read 0 ms
            elif len(hit):
                lat.append(1e3 * hit[0] / RATE)
            probe.send(bytes([0x80, 69, 0]))
            time.sleep(0.7)  # release to silence
    finally:
        daemon.terminate()
        probe.close()
        server.stop()
    a = np.array(lat)
    return {"label": label, "n": len(a), "skipped": skipped, "min": a.min(), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": a.max()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--render-ahead", default="auto", help="canne run --render-ahead (auto or frames; default auto)")
    ap.add_argument("--append", action="store_true", help="append the figures to BENCHMARKS.md (Daemon)")
    args = ap.parse_args()
    from harmonic_model import build_harmonic_decoder

    tmp = Path(tempfile.mkdtemp(prefix="canne-lat-"))
    mapping = tmp / "map.yaml"
    mapping.write_text("version: 1\ntakeover: jump\nnotes: {pitch_mode: transpose, polyphony: 8}\n")
    low = tmp / "low"
    build_harmonic_decoder(low, n_fft=1024, hop_length=256)
    rows = []
    for model, label, hop, sr in ((str(REPO / "models" / "default"), "4096/1024 (models/default)", 1024, 44100),
                                  (str(low), "1024/256 (harmonic test decoder)", 256, 44100)):
        r = measure(model, args.trials, label, mapping, args.render_ahead)
        r["target"] = 1e3 * (PERIOD / RATE + hop / sr)
        if args.render_ahead:
            label = r["label"] = f"{label}, render ahead {args.render_ahead}"
        rows.append(r)
        print(f"{label}: n={r['n']} min {r['min']:.1f} ms, median {r['median']:.1f} ms, "
              f"p95 {r['p95']:.1f} ms, max {r['max']:.1f} ms (block + hop = {r['target']:.1f} ms)")
    if args.append:
        lines = [f"\n### MIDI-to-sound latency ({time.strftime('%Y-%m-%d')}, {platform.node()}, "
                 f"{os.cpu_count()} CPU, jackd dummy 48 kHz / {PERIOD} frames, {args.trials} trials)\n",
                 "`python benchmarks/latency.py`: MIDI byte sent by a JACK client → first sample above "
                 "−80 dBFS recorded by the same client.\n",
                 "| profile | min ms | median ms | p95 ms | max ms | block + hop ms |",
                 "| --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['label']} | {r['min']:.1f} | {r['median']:.1f} | {r['p95']:.1f} | "
                         f"{r['max']:.1f} | {r['target']:.1f} |")
        _append(lines)
    return 0


def _append(lines: list[str]) -> None:
    """Append to the end of the "## Daemon" section of BENCHMARKS.md (created if absent)."""
    path = REPO / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = "\n".join(lines) + "\n"
    head = "\n## Daemon\n"
    if head not in text:
        text = text.rstrip("\n") + "\n" + head + "\nFigures from `benchmarks/latency.py`, `startup.py`, " \
            "`soak.py` (issue 4).\n" + block
    else:
        start = text.index(head) + len(head)
        nxt = text.find("\n## ", start)
        end = len(text) if nxt < 0 else nxt + 1
        text = text[:end].rstrip("\n") + "\n" + block + ("\n" + text[end:] if nxt >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
