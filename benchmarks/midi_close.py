"""Open and close the JACK MIDI input many times while a controller floods it; count crashes.

    python benchmarks/midi_close.py [--children 4] [--cycles 150] [--rate 2000]

Each child process opens ``MidiInput(api="jack")`` on a dummy JACK server, connected to a
sender that streams control changes at ``--rate`` per second, drains it for 50 ms and
closes it, ``--cycles`` times. A child killed by a signal is a crash (its Python stacks are
printed by faulthandler) and ends that child's cycles; the closes counted are those that
returned. Before ``MidiInput.close`` quieted the hub and closed it first,
this crashed about once in 380 closes (libjack, jack2 issue #216); see ``BENCHMARKS.md``,
*Daemon → MIDI input teardown*.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

CHILD = """
import faulthandler, sys, time
faulthandler.enable(all_threads=True)
sys.path.insert(0, {repo!r})
from daemon.adapters.midi_input import MidiInput
for _ in range({cycles}):
    m = MidiInput(api="jack", patterns=["midi-close-ctl"])
    m.start()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.05:
        m.drain()
        time.sleep(0.002)
    m.close()
    print(".", end="", flush=True)
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", type=int, default=4)
    ap.add_argument("--cycles", type=int, default=150)
    ap.add_argument("--rate", type=float, default=2000.0, help="control changes per second")
    args = ap.parse_args(argv)

    from jack_util import MidiSender, benchmark_rig

    server, _ = benchmark_rig("midi-close")
    sender = MidiSender("midi-close-ctl")
    stop = threading.Event()

    def flood():
        period = 1.0 / args.rate
        value = 0
        while not stop.is_set():
            sender.cc(41, value)
            value = (value + 1) % 128
            time.sleep(period)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    crashes, closes, t0 = 0, 0, time.monotonic()
    try:
        for i in range(args.children):
            code = CHILD.format(repo=str(REPO), cycles=args.cycles)
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
            closes += r.stdout.count(".")
            if r.returncode < 0:
                crashes += 1
                print(f"child {i}: killed by signal {-r.returncode}\n{r.stderr[-2000:]}", flush=True)
            elif r.returncode != 0:
                print(f"child {i}: exit {r.returncode}\n{r.stderr[-2000:]}", flush=True)
    finally:
        stop.set()
        thread.join(2)
        sender.close()
        server.stop()
    print(f"{closes} closes under a {args.rate:.0f}/s CC flood in {time.monotonic() - t0:.0f} s: "
          f"{crashes} crashed child{'ren' if crashes != 1 else ''}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
