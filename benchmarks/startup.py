"""Start-to-first-sound time of `canne run` (models/default) on a JACK dummy server.

A JACK client holds a MIDI output port and records. The clock starts when
`canne run` is launched (its recording index is noted just before the
process starts); the note-on is sent the moment the daemon's MIDI input
connects to our port; the clock stops at the first recorded sample above
−80 dBFS. Includes Python start-up, imports, model load and warm-up, MIDI and
audio opening, the 50 ms fade-in start. Target (issue 4): ≤ 2 s.

    python benchmarks/startup.py [--runs 5] [--append]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import PERIOD, RATE, REPO, THRESHOLD, Probe, _append  # noqa: E402

from jack_util import Daemon, JackServer, wait_for  # noqa: E402


def one_run(server: JackServer, probe: Probe, mapping: Path) -> tuple[float, float]:
    start = probe.pos
    daemon = Daemon(["run", "--mapping", str(mapping), "--midi-in", "lat-probe"], env=server.env, cwd=REPO)
    try:
        wait_for(lambda: probe.client.get_all_connections(probe.midi), 30, 0.002, "the daemon's MIDI input")
        probe.send(bytes([0x90, 69, 100]))
        wait_for(lambda: [p for p in probe.client.get_ports("^CANNe-audio", is_audio=True, is_output=True)],
                 30, 0.002, "CANNe-audio ports")
        src = sorted(p.name for p in probe.client.get_ports("^CANNe-audio", is_audio=True, is_output=True))[0]
        probe.client.connect(src, probe.ins[0].name)

        def first_sound():
            hit = np.flatnonzero(np.abs(probe.data[start:probe.pos]) > THRESHOLD)
            return int(hit[0]) + 1 if len(hit) else 0

        idx = wait_for(first_sound, 30, 0.01, "first sound") - 1
        ready = float("nan")
        for line in daemon.lines:
            if "ready in" in line:
                ready = float(line.rsplit("ready in", 1)[1].split()[0])
    finally:
        probe.send(bytes([0x80, 69, 0]))
        daemon.terminate()
    return idx / RATE, ready


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--append", action="store_true", help="append the figures to BENCHMARKS.md (Daemon)")
    args = ap.parse_args()
    mapping = Path(tempfile.mkdtemp(prefix="canne-start-")) / "map.yaml"
    mapping.write_text("version: 1\ntakeover: jump\n")
    server = JackServer(f"canne-start-{os.getpid()}", period=PERIOD)
    server.start()
    os.environ.update({k: v for k, v in server.env.items() if k.startswith("JACK_")})
    probe = Probe(server, seconds=30.0 * args.runs + 30)
    times, readies = [], []
    try:
        for _ in range(args.runs):
            t, ready = one_run(server, probe, mapping)
            times.append(t)
            readies.append(ready)
            print(f"start → first sound {t:.2f} s (instrument process ready after {ready:.2f} s)")
            time.sleep(1.0)
    finally:
        probe.close()
        server.stop()
    med, worst = float(np.median(times)), max(times)
    print(f"median {med:.2f} s, max {worst:.2f} s over {args.runs} runs (target ≤ 2 s)")
    if args.append:
        _append([f"\n### Start to first sound ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU)\n",
                 "`python benchmarks/startup.py`: `canne run` (supervisor + instrument process, models/default) "
                 "launched → note-on sent when its MIDI input connects → first sample above −80 dBFS.\n",
                 f"- median {med:.2f} s, max {worst:.2f} s over {args.runs} runs (target ≤ 2 s); "
                 f"the instrument process itself reported ready after {np.nanmedian(readies):.2f} s (median)."])
    return 0


if __name__ == "__main__":
    sys.exit(main())
