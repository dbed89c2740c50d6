"""Soak test of `canne run`: 8 held voices under a MIDI flood on a JACK dummy server.

A JACK client sends, from its process callback (one 256-frame period = 5.3 ms):
five CC messages spread over CC 21-28 (≈ 940 CC/s, the knobs of the default
mapping), MIDI clock and active sensing every period, a sysex every 100 periods,
and re-triggers one of the 8 held notes every 2 s. It records the daemon's
output and keeps per-second figures (RMS, peak, non-finite samples). The
instrument process's resident memory is sampled every 10 s from /proc; xruns and
underruns come from the daemon's `--status` line, JACK xruns from the client.

Pass: no crash or restart, no NaN, |y| ≤ 1, RSS flat within ±5 % (after the first
minute), sound all along. Prints the figures; `--append` adds them to BENCHMARKS.md.

    python benchmarks/soak.py [--minutes 10] [--append]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import PERIOD, RATE, REPO, _append  # noqa: E402

from jack_util import Daemon, JackServer, MidiOutRecorder, benchmark_rig, wait_for  # noqa: E402

NOTES = (48, 52, 55, 60, 64, 67, 71, 74)


class Flood(MidiOutRecorder):
    """JACK client: MIDI flood out + mono recorder reduced to per-second statistics."""

    def __init__(self, server: JackServer, seconds: int, cc_per_period: int = 5):
        super().__init__(server, "soak", seconds + 120)
        self.cc_per_period = cc_per_period
        self.n_sec = seconds + 120
        self.periods = 0
        self.sent = 0
        self.flooding = False
        self._acc = 0.0
        self.activate()

    def send(self, frames):
        if not self.flooding:
            return
        p = self.periods
        self.periods += 1
        w = self.midi.write_midi_event
        if self.cc_per_period:
            w(0, b"\xf8")
            w(0, b"\xfe")
            self.sent += 2
        for k in range(self.cc_per_period):
            cc = 21 + (p * 5 + k) % 8
            w(min(k * 50, frames - 1), bytes([0xB0, cc, (p + 13 * k) % 128]))
            self.sent += 1
        if p % 100 == 0 and self.cc_per_period:
            w(frames - 1, b"\xf0\x7e\x7f\x06\x01\xf7")
            self.sent += 1
        if p % 375 == 0:  # every 2 s: re-trigger one of the held notes
            note = NOTES[(p // 375) % len(NOTES)]
            w(frames - 1, bytes([0x80, note, 0]))
            w(frames - 1, bytes([0x90, note, 90]))
            self.sent += 2

    def connect(self):
        src = wait_for(lambda: sorted(p.name for p in self.client.get_ports("^CANNe-audio", is_audio=True,
                                                                            is_output=True)), 60, 0.05,
                       "CANNe-audio ports")
        self.client.connect(src[0], self.inp.name)

    def close(self):
        self.client.deactivate()
        self.client.close()


def child_pid(parent: int) -> int | None:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    return pids[0] if pids else None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--cc-per-period", type=int, default=5,
                    help="CC messages per 256-frame period (5 ≈ 940/s); 0 = notes only, no flood")
    ap.add_argument("--append", action="store_true")
    args = ap.parse_args()
    seconds = int(args.minutes * 60)
    server, mapping = benchmark_rig("canne-soak")
    flood = Flood(server, seconds, args.cc_per_period)
    daemon = Daemon(["run", "--mapping", str(mapping), "--midi-in", "soak", "--status", "--polyphony", "8"],
                    env=server.env, cwd=REPO)
    rss = []
    try:
        daemon.wait_log("audio:", timeout=60)
        flood.connect()
        wait_for(lambda: flood.client.get_all_connections(flood.midi), 30, 0.05, "the daemon's MIDI input")
        pid = wait_for(lambda: child_pid(daemon.proc.pid), 10, 0.1, "the instrument process")
        flood.flooding = True
        start_frames = flood.frames
        t0 = time.monotonic()
        next_rss = t0
        # The flood's re-trigger cycles through all 8 notes within 16 s; they stay held.
        while time.monotonic() - t0 < seconds:
            if daemon.proc.poll() is not None:
                break
            if not flood.client.get_all_connections(flood.inp):  # the instrument was restarted
                ports = sorted(p.name for p in flood.client.get_ports("^CANNe-audio", is_audio=True,
                                                                      is_output=True))
                if ports:
                    try:
                        flood.client.connect(ports[0], flood.inp.name)
                    except Exception:
                        pass  # the listing raced with the connection: already connected
            if time.monotonic() >= next_rss:
                p = child_pid(daemon.proc.pid)
                rss.append((time.monotonic() - t0, rss_mb(p) if p else float("nan"), p))
                next_rss += 10.0
            time.sleep(0.5)
        end_frames = flood.frames
    finally:
        log_path = Path(tempfile.gettempdir()) / f"canne-soak-{os.getpid()}.log"
        log_path.write_text("\n".join(ln for ln in daemon.lines if not ln.startswith("voices ")) + "\n")
        print(f"daemon log (without status lines): {log_path}")
        status = [ln for ln in daemon.lines if ln.startswith("voices ")]
        code, _ = daemon.terminate()
        flood.close()
        server.stop()
    s0, s1 = start_frames // RATE + 20, end_frames // RATE - 1  # skip the first 20 s (notes arriving)
    secs = flood.data[s0 * RATE:s1 * RATE].reshape(-1, RATE)
    nonfinite = int(np.count_nonzero(~np.isfinite(secs)))
    secs = np.nan_to_num(secs, nan=0.0, posinf=0.0, neginf=0.0)
    rms_db = 10 * np.log10(np.mean(secs.astype(np.float64) ** 2, axis=1) + 1e-20)
    peak = float(np.abs(flood.data[start_frames:end_frames]).max())
    last = status[-1] if status else ""
    xr = int(re.search(r"xruns (\d+)", last).group(1)) if last else -1
    ur = int(re.search(r"underruns (\d+)", last).group(1)) if last else -1
    voices = re.search(r"voices (\d+)", last).group(1) if last else "?"
    midi = re.search(r"midi (\d+) \(dropped (\d+)\)", last)
    restarts = sum("exited with code" in ln for ln in daemon.lines)
    pids = {p for _, _, p in rss}
    base = [m for t, m, _ in rss if t >= 60] or [m for _, m, _ in rss]
    drift = 100 * (max(base) - min(base)) / base[0] if base else float("nan")
    res = {
        "minutes": (end_frames - start_frames) / RATE / 60,
        "exit": code, "restarts": restarts, "instrument_pids": len(pids),
        "nonfinite": nonfinite, "peak": peak,
        "rms_min": float(rms_db.min()), "rms_median": float(np.median(rms_db)),
        "xruns": xr, "underruns": ur, "jack_xruns": flood.xruns, "voices": voices,
        "midi_sent": flood.sent, "midi_received": int(midi.group(1)) if midi else -1,
        "midi_dropped": int(midi.group(2)) if midi else -1,
        "rss_first": base[0] if base else float("nan"), "rss_last": base[-1] if base else float("nan"),
        "rss_drift_pct": drift,
    }
    for ln in daemon.lines:
        if not ln.startswith("voices ") and (" WARNING " in ln or " ERROR " in ln):
            print("daemon:", ln)
    for k, v in res.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
    if args.append:
        ok = (res["nonfinite"] == 0 and res["peak"] <= 1.0 and res["restarts"] == 0 and abs(drift) <= 5)
        _append([
            f"\n### Soak ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU, "
            f"jackd dummy 48 kHz / {PERIOD} frames)\n",
            f"`python benchmarks/soak.py --minutes {args.minutes:g}`: models/default, 8 held voices "
            "(re-triggered one every 2 s), flood of ≈ 940 CC/s over CC 21-28 + clock + active sensing every "
            "period + sysex every 0.5 s, sent from a JACK process callback.\n",
            f"- {res['minutes']:.1f} min played, {res['restarts']} restarts, exit {res['exit']}; "
            f"{'PASS' if ok else 'FAIL'} (no NaN, |y| ≤ 1, no restart, RSS ±5 %)",
            f"- non-finite samples {res['nonfinite']}, peak |y| {res['peak']:.3f}, per-second RMS "
            f"min {res['rms_min']:.1f} / median {res['rms_median']:.1f} dBFS",
            f"- xruns reported by PortAudio {res['xruns']}, underruns {res['underruns']}, JACK xruns seen by the "
            f"flood client {res['jack_xruns']}",
            f"- MIDI sent {res['midi_sent']} (clock/active sensing/sysex filtered in rtmidi), received "
            f"{res['midi_received']}, dropped by the bounded queue {res['midi_dropped']}",
            f"- instrument RSS {res['rss_first']:.1f} MB at 1 min → {res['rss_last']:.1f} MB at the end "
            f"(spread {res['rss_drift_pct']:.1f} %)",
        ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
