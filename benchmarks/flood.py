"""MIDI flood on `canne run` through a JACK dummy server (issue 9, overload figures).

A JACK client (this script) sends MIDI from its process callback (one 256-frame period
= 5.3 ms) and records the instrument's output:

1. 8 notes held (48 ... 74) for the whole run;
2. *flood*: 1,000 note events/s (random note-on/note-off toggles over the other keys 36-95,
   random velocities) plus 500 CC/s over CC 21-28 (the default mapping's knobs) for
   ``--seconds``; then a note-off for every flood key; 3 s later the instrument must
   render exactly the 8 held voices again (status line) and still sound;
3. *storm*: the same at 10,000 note events/s for ``--storm-seconds``, then the same check.

Per phase: JACK cycles in the phase, JACK xruns seen by this client (and, from the
jackd log, which client was late), the instrument's own xrun count (PortAudio's
output-underflow flag, status line), recorded periods that are silent although notes
are held (dropouts), non-finite samples and peak |y|, voices and the engine's CPU
figure (status line), MIDI received/dropped. Prints the figures; ``--append`` writes
them into the "Overload" section of BENCHMARKS.md.

    python benchmarks/flood.py [--seconds 60] [--storm-seconds 10] [--polyphony 64] [--render-ahead auto] [--append]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from jack_util import INSTRUMENT_CLIENT, PERIOD, RATE, Daemon, JackServer, MidiOutRecorder, benchmark_rig, wait_for  # noqa: E402

HELD = (48, 52, 55, 60, 64, 67, 71, 74)
FLOOD_KEYS = tuple(k for k in range(36, 96) if k not in HELD)  # 52 keys around the held ones
CCS = tuple(range(21, 29))
STATUS = re.compile(r"voices (\d+) \| cpu\s+([\d.]+)% \(hop max (\d+)%\) \| xruns (\d+) \| underruns (\d+) \| "
                    r"midi (\d+) \(dropped (\d+)\)")


class FloodClient(MidiOutRecorder):
    """JACK client: MIDI out (flood generated in the process callback) + mono recorder."""

    def __init__(self, server: JackServer, seconds: float, seed: int = 1):
        super().__init__(server, "flood", seconds)
        self.note_rate = 0.0  # note events per second
        self.cc_rate = 0.0
        self.sent_notes = 0
        self.sent_cc = 0
        self.write_errors = 0
        self.sent_other = 0  # one-shot messages (held notes, note-offs, probes)
        self.oneshot: list[bytes] = []  # sent at the next period (set from the main thread)
        self.on = bytearray(128)  # flood keys currently down (as sent)
        self._acc_n = 0.0
        self._acc_c = 0.0
        self._rng = random.Random(seed)
        self.activate()

    def send(self, frames):
        ev = []  # (frame, bytes): JACK wants them in time order
        if self.oneshot:
            msgs, self.oneshot = self.oneshot, []
            ev.extend((0, m) for m in msgs)
            self.sent_other += len(msgs)
        dt = frames / RATE
        self._acc_n += self.note_rate * dt
        self._acc_c += self.cc_rate * dt
        n, c = int(self._acc_n), int(self._acc_c)
        self._acc_n -= n
        self._acc_c -= c
        rnd = self._rng.random
        for i in range(n):
            key = FLOOD_KEYS[int(rnd() * len(FLOOD_KEYS))]
            t = i * frames // n
            if self.on[key]:
                ev.append((t, bytes((0x80, key, 0))))
                self.on[key] = 0
            else:
                ev.append((t, bytes((0x90, key, 1 + int(rnd() * 127)))))
                self.on[key] = 1
        self.sent_notes += n
        for i in range(c):
            ev.append((i * frames // c, bytes((0xB0, CCS[int(rnd() * len(CCS))], int(rnd() * 128)))))
        self.sent_cc += c
        ev.sort(key=lambda e: e[0])
        w = self.midi.write_midi_event
        for t, m in ev:
            try:
                w(t, m)
            except Exception:  # port buffer full: counted (the figures say so)
                self.write_errors += 1

    def send_now(self, msgs: list[bytes], timeout: float = 5.0) -> None:
        self.oneshot = list(msgs)
        wait_for(lambda: not self.oneshot, timeout, 0.002, "the one-shot MIDI to leave")

    def close(self):
        try:
            self.client.deactivate()
            self.client.close()
        except Exception:
            pass


def engine_alone(note_rate: float, cc_rate: float, polyphony: int, seconds: float = 10.0) -> dict:
    """The same flood replayed into the engine offline (no JACK, no MIDI parsing): render time
    per hop against the hop and against one JACK period (the callback that renders a hop
    must finish within a period)."""
    from daemon.core.engine import NOTE_EVENTS_PER_HOP, NOTE_ONS_PER_HOP, Engine
    from daemon.core.model import DecoderModel

    e = Engine(DecoderModel(REPO / "models" / "default"), sample_rate=RATE, polyphony=polyphony,
               max_polyphony=max(64, polyphony))
    for k in HELD:
        e.note_on(k, 100)
    hop = e.hop_length
    e.render(20 * hop)
    rng = random.Random(1)
    on = bytearray(128)
    acc_n = acc_c = 0.0
    times, voices = [], []
    for _ in range(int(seconds * RATE / hop)):
        acc_n += note_rate * hop / RATE
        acc_c += cc_rate * hop / RATE
        n, c = int(acc_n), int(acc_c)
        acc_n -= n
        acc_c -= c
        for _ in range(n):
            key = FLOOD_KEYS[int(rng.random() * len(FLOOD_KEYS))]
            if on[key]:
                e.note_off(key)
            else:
                e.note_on(key, 1 + int(rng.random() * 127))
            on[key] ^= 1
        for _ in range(c):
            e.set_latent(int(rng.random() * 8), rng.random())
        t = time.perf_counter()
        e.render(hop)
        times.append(time.perf_counter() - t)
        voices.append(e.stats.active_voices)
    ms = 1000 * np.array(times)
    period_ms = 1000 * PERIOD / RATE
    return {"rate": note_rate, "hop_ms": 1000 * hop / RATE, "mean_ms": float(ms.mean()),
            "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max()),
            "over_period_pct": float(100 * np.mean(ms > period_ms)), "voices_mean": float(np.mean(voices)),
            "voices_max": int(max(voices)), "budget": f"{NOTE_EVENTS_PER_HOP}/{NOTE_ONS_PER_HOP}"}


def status_rows(lines: list[str]) -> list[tuple[int, ...] | tuple]:
    rows = []
    for ln in lines:
        m = STATUS.search(ln)
        if m:
            v, cpu, peak, xr, ur, rx, drop = m.groups()
            rows.append((int(v), float(cpu), int(peak), int(xr), int(ur), int(rx), int(drop)))
    return rows


def cpu_ticks(pid: int | None) -> tuple[int, int]:
    """(whole process, main thread = the control loop) user+system clock ticks."""
    out = []
    for path in (f"/proc/{pid}/stat", f"/proc/{pid}/task/{pid}/stat"):
        try:
            f = Path(path).read_text().rsplit(")", 1)[1].split()
            out.append(int(f[11]) + int(f[12]))
        except (OSError, IndexError, ValueError, TypeError):
            out.append(0)
    return out[0], out[1]


def child_pid(parent: int) -> int | None:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    return pids[0] if pids else None


def late_clients(log: Path, start: int) -> dict[str, int]:
    """jackd's "client = X was not finished" lines after byte ``start``: count per client."""
    try:
        text = log.read_bytes()[start:].decode("utf-8", "replace")
    except OSError:
        return {}
    counts: dict[str, int] = {}
    for m in re.finditer(r"client = (\S+) was not finished", text):
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def received(daemon: Daemon) -> int:
    rows = status_rows(daemon.lines)
    return rows[-1][5] if rows else -1


def send_checked(flood: FloodClient, daemon: Daemon, msgs: list[bytes], tries: int = 4) -> int:
    """Send ``msgs`` and check the instrument's MIDI counter took them all in; resend when a
    JACK cycle that overran lost them (not the instrument's doing). Returns the resends."""
    for attempt in range(tries):
        time.sleep(1.1)  # a fresh status line: the counter before
        r0 = received(daemon)
        flood.send_now(msgs)
        try:
            wait_for(lambda: received(daemon) >= r0 + len(msgs), 3.0, 0.1, "the MIDI counter")
            return attempt
        except TimeoutError:
            continue
    return tries


def probe(flood: FloodClient, daemon: Daemon, key: int = 81) -> int:
    """A fresh note after the flood: the voices the status line counts while it is held
    (held notes + 1 when the instrument still takes new notes)."""
    send_checked(flood, daemon, [bytes((0x90, key, 120))])
    n = len(daemon.lines)
    time.sleep(1.1)  # a status line per second
    rows = status_rows(daemon.lines[n:])
    flood.send_now([bytes((0x80, key, 0))])
    time.sleep(0.7)
    return rows[-1][0] if rows else -1


def phase(flood: FloodClient, daemon: Daemon, server: JackServer, note_rate: float, cc_rate: float,
          seconds: float, label: str) -> dict:
    """Flood for ``seconds``, then a note-off for every flood key, then 3 s of held notes."""
    log_pos = server.log_path.stat().st_size if server.log_path.exists() else 0
    n_lines = len(daemon.lines)
    f0, x0 = flood.frames, flood.xruns
    n0, c0 = flood.sent_notes, flood.sent_cc
    pid = child_pid(daemon.proc.pid)
    p0, m0 = cpu_ticks(pid)
    t0 = time.monotonic()
    flood.note_rate, flood.cc_rate = note_rate, cc_rate
    time.sleep(seconds)
    flood.note_rate = flood.cc_rate = 0.0
    f1, x1 = flood.frames, flood.xruns
    wall = time.monotonic() - t0
    p1, m1 = cpu_ticks(pid)
    hz = os.sysconf("SC_CLK_TCK")
    late = late_clients(server.log_path, log_pos)
    during = status_rows(daemon.lines[n_lines:])
    # matching note-offs, resent if JACK lost them in a cycle that overran
    resends = send_checked(flood, daemon, [bytes((0x80, k, 0)) for k in FLOOD_KEYS])
    time.sleep(3.0)
    after = status_rows(daemon.lines[n_lines:])
    f2 = flood.frames
    probe_voices = probe(flood, daemon)
    y = flood.data[f0:f1]
    per = y[: len(y) // PERIOD * PERIOD].reshape(-1, PERIOD)
    silent = int(np.count_nonzero(np.max(np.abs(np.nan_to_num(per)), axis=1) < 1e-5))
    cycles = (f1 - f0) // PERIOD  # cycles JACK ran
    expected = int(wall * RATE / PERIOD)  # cycles the wall clock asked for
    tail = flood.data[f2 - RATE:f2].astype(np.float64)
    before = status_rows(daemon.lines[:n_lines])
    xr_before = before[-1][3] if before else 0
    res = {
        "label": label, "seconds": wall, "note_rate": note_rate, "cc_rate": cc_rate,
        "sent_notes": flood.sent_notes - n0, "sent_cc": flood.sent_cc - c0,
        "cycles_expected": expected, "cycles_run": cycles,
        "cycles_lost_pct": 100.0 * max(expected - cycles, 0) / max(expected, 1),
        "jack_xruns": x1 - x0, "jack_xrun_pct": 100.0 * (x1 - x0) / max(expected, 1),
        "late": late, "silent_periods": silent, "silent_pct": 100.0 * silent / max(cycles, 1),
        "nonfinite": int(np.count_nonzero(~np.isfinite(y))), "peak": float(np.max(np.abs(np.nan_to_num(y)))),
        "instrument_xruns": (during[-1][3] - xr_before) if during else -1,
        # blocks played as silence by the instrument: no source, a failed render, or (render
        # ahead) a block the producer had not filled in time
        "instrument_underruns": (during[-1][4] - (before[-1][4] if before else 0)) if during else -1,
        "voices_max": max((r[0] for r in during), default=-1),
        "cpu_mean": float(np.mean([r[1] for r in during])) if during else float("nan"),
        "cpu_hop_max": max((r[2] for r in during), default=-1),
        "midi_received": (during[-1][5] - (before[-1][5] if before else 0)) if during else -1,
        "midi_dropped": (during[-1][6] - (before[-1][6] if before else 0)) if during else -1,
        "voices_after": after[-1][0] if after else -1,
        "instrument_cpu_pct": 100.0 * (p1 - p0) / hz / wall, "control_loop_cpu_pct": 100.0 * (m1 - m0) / hz / wall,
        "rms_after_dbfs": float(10 * np.log10(np.mean(tail ** 2) + 1e-20)), "probe_voices": probe_voices, "off_resends": resends,
    }
    res["stuck"] = res["voices_after"] > len(HELD)  # flood notes still rendered 3 s after their note-off
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="flood at 1,000 note events/s + 500 CC/s")
    ap.add_argument("--storm-seconds", type=float, default=10.0, help="storm at 10,000 note events/s")
    ap.add_argument("--notes-per-s", type=float, default=1000.0)
    ap.add_argument("--cc-per-s", type=float, default=500.0)
    ap.add_argument("--storm-notes-per-s", type=float, default=10000.0)
    ap.add_argument("--baseline-seconds", type=float, default=20.0, help="held notes only, no flood")
    ap.add_argument("--polyphony", type=int, default=64)
    ap.add_argument("--render-ahead", default="auto", help="canne run --render-ahead (auto or frames; default auto)")
    ap.add_argument("--append", action="store_true", help="write the figures into BENCHMARKS.md (Overload)")
    args = ap.parse_args()
    server, mapping = benchmark_rig("canne-flood")
    flood = FloodClient(server, args.baseline_seconds + args.seconds + args.storm_seconds + 60)
    daemon = Daemon(["run", "--mapping", str(mapping), "--midi-in", "flood", "--status",
                     "--polyphony", str(args.polyphony), "--render-ahead", str(args.render_ahead)],
                    env=server.env, cwd=REPO)
    load0 = os.getloadavg()
    alone = [engine_alone(r, args.cc_per_s, args.polyphony) for r in (args.notes_per_s, args.storm_notes_per_s)]
    for a in alone:
        print("engine alone: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in a.items()))
    results = []
    try:
        daemon.wait_log("audio:", timeout=60)
        src = wait_for(lambda: sorted(p.name for p in flood.client.get_ports(
            f"^{INSTRUMENT_CLIENT}", is_audio=True, is_output=True)), 60, 0.05, "the instrument's ports")
        flood.client.connect(src[0], flood.inp.name)
        wait_for(lambda: flood.client.get_all_connections(flood.midi), 30, 0.05, "the instrument's MIDI input")
        time.sleep(1.0)
        flood.send_now([bytes((0x90, k, 100)) for k in HELD])
        time.sleep(3.0)
        ref = flood.data[flood.frames - RATE:flood.frames].astype(np.float64)
        ref_db = float(10 * np.log10(np.mean(ref ** 2) + 1e-20))
        if args.baseline_seconds > 0:  # what this machine drops with no flood at all
            results.append(phase(flood, daemon, server, 0.0, 0.0, args.baseline_seconds, "held only"))
        results.append(phase(flood, daemon, server, args.notes_per_s, args.cc_per_s, args.seconds, "flood"))
        results.append(phase(flood, daemon, server, args.storm_notes_per_s, args.cc_per_s, args.storm_seconds,
                             "storm"))
        restarts = sum("exited with code" in ln for ln in daemon.lines)
        time.sleep(1.5)
        final = status_rows(daemon.lines)
        midi_sent = flood.sent_notes + flood.sent_cc + flood.sent_other
        midi_got = final[-1][5] if final else -1
    finally:
        code, _ = daemon.terminate()
        flood.close()
        server.stop()
    load1 = os.getloadavg()
    for ln in daemon.lines:
        if not STATUS.search(ln) and (" WARNING " in ln or " ERROR " in ln):
            print("daemon:", ln)
    print(f"held notes alone: {ref_db:.1f} dBFS; load average {load0[0]:.2f} -> {load1[0]:.2f}; "
          f"restarts {restarts}, exit {code}; MIDI sent {midi_sent}, received {midi_got} "
          f"(write errors {flood.write_errors})")
    for r in results:
        print(f"[{r['label']}] " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in r.items() if k != "label"))
    if args.append:
        _append(results, alone, args, ref_db, load0, load1, restarts, (midi_sent, midi_got, flood.write_errors))
    return 0 if all(not r["stuck"] and r["nonfinite"] == 0 and r["peak"] <= 1.0 for r in results) else 1


def _append(results, alone, args, ref_db, load0, load1, restarts, midi) -> None:
    """Replace the body of the "## Overload" section of BENCHMARKS.md (created if absent)."""
    from daemon.core.engine import NOTE_EVENTS_PER_HOP, NOTE_ONS_PER_HOP

    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    lines = [
        f"`python benchmarks/flood.py --baseline-seconds {args.baseline_seconds:g} --seconds {args.seconds:g} "
        f"--storm-seconds {args.storm_seconds:g} --polyphony {args.polyphony} --render-ahead {args.render_ahead}` ({time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU, "
        f"load average {load0[0]:.1f} → {load1[0]:.1f}: a shared machine, not a quiet one; jackd dummy "
        f"48 kHz / {PERIOD} frames, no realtime): models/default, 8 notes held, MIDI sent from a JACK "
        f"process callback; engine budget {NOTE_EVENTS_PER_HOP} note events ({NOTE_ONS_PER_HOP} note-ons) per "
        "1024-sample hop.",
        "",
        "| phase | MIDI sent | JACK cycles run / due (lost) | JACK xruns (% of cycles due) | late clients "
        "(jackd log) | instrument xruns | silent periods | NaN / peak | voices max | engine CPU mean / worst "
        "hop | instrument process CPU (control loop) | after all flood keys off |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        late = ", ".join(f"{k} {v}" for k, v in sorted(r["late"].items())) or "-"
        lines.append(
            f"| {r['label']}: {r['note_rate']:,.0f} notes/s + {r['cc_rate']:,.0f} CC/s, {r['seconds']:.0f} s | "
            f"{r['sent_notes']:,} notes, {r['sent_cc']:,} CC (received {r['midi_received']:,}, dropped "
            f"{r['midi_dropped']}) | {r['cycles_run']:,} / {r['cycles_expected']:,} ({r['cycles_lost_pct']:.1f} %) | "
            f"{r['jack_xruns']} ({r['jack_xrun_pct']:.2f} %) | {late} | "
            f"{r['instrument_xruns']} | {r['silent_periods']} ({r['silent_pct']:.2f} %) | {r['nonfinite']} / "
            f"{r['peak']:.3f} | {r['voices_max']} (cap {args.polyphony}) | {r['cpu_mean']:.0f} % / "
            f"{r['cpu_hop_max']} % | {r['instrument_cpu_pct']:.0f} % ({r['control_loop_cpu_pct']:.0f} %) | "
            f"{r['voices_after']} voices ({'no stuck note' if not r['stuck'] else 'STUCK'}; note-offs resent "
            f"{r['off_resends']}x), "
            f"{r['rms_after_dbfs']:.1f} dBFS (held notes alone {ref_db:.1f}); with one new note {r['probe_voices']} voices |")
    lines.append(f"\nRestarts during the run: {restarts}. MIDI messages sent {midi[0]:,}, received by the "
                 f"instrument {midi[1]:,} (the rest lost in JACK cycles that overran; port-buffer write errors "
                 f"{midi[2]}). Engine alone, the same flood replayed offline "
                 f"(polyphony {args.polyphony}, budget {alone[0]['budget']} note events/note-ons per hop):")
    for a in alone:
        lines.append(f"- {a['rate']:,.0f} notes/s: render per {a['hop_ms']:.1f} ms hop mean {a['mean_ms']:.1f} ms, "
                     f"p99 {a['p99_ms']:.1f} ms, max {a['max_ms']:.1f} ms; {a['over_period_pct']:.0f} % of hops "
                     f"longer than one JACK period ({1000 * PERIOD / RATE:.1f} ms); voices mean "
                     f"{a['voices_mean']:.0f}, max {a['voices_max']}")
    block = "\n".join(lines) + "\n"
    head = "\n## Overload\n"
    mark = "`python benchmarks/flood.py"
    if head not in text:
        text = text.rstrip("\n") + "\n" + head + "\n" + block
    else:  # replace the block of the same polyphony (or add one) at the end of the section
        start = text.index(head) + len(head)
        nxt = text.find("\n## ", start)
        end = len(text) if nxt < 0 else nxt + 1
        section = text[start:end]
        parts = section.split(mark)
        keep = [parts[0]] + [mark + b for b in parts[1:] if f"--polyphony {args.polyphony} --render-ahead {args.render_ahead}`" not in b.split("\n", 1)[0]]
        section = "".join(keep).rstrip("\n") + "\n\n" + block
        text = text[:start] + section + ("\n" + text[end:] if nxt >= 0 else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
