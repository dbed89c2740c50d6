"""Input-to-output latency of `canne effect` on a JACK dummy server, end to end.

    python benchmarks/effect_latency.py --model models/anne [--period 256] [--trials 5]

A JACK client loops two seconds of white noise (-20 dBFS) into ``CANNe-audio:in_1`` and
records both its own signal and the effect's output in the same process cycle; the
latency is the lag of the cross-correlation peak between input and output (the effect
runs the model at unity gains with the input's phase, so the output keeps the input's
waveform closely enough for a sharp peak).
Prints each trial and the median, in samples and ms, beside n_fft + block + hop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jack_util import Daemon, Recorder, jack_server_env, wait_for  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "models" / "anne"))
    ap.add_argument("--rate", type=int, default=48000)
    ap.add_argument("--period", type=int, default=256)
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args(argv)
    import jack

    from daemon.core.model import DecoderModel

    m = DecoderModel(args.model)
    rate = args.rate
    sig = (0.1 * np.random.default_rng(0).standard_normal(2 * rate)).astype(np.float32)
    n_sig = len(sig)
    lags = []
    with tempfile.TemporaryDirectory() as td, \
            jack_server_env("canne-fxlat", Path(td)) as server:
        rec = Recorder(server, name="fxlat-rec")
        player = jack.Client("fxlat-player", no_start_server=True, servername=server.name)
        out = player.outports.register("out")
        pos = [0]

        def process(frames):
            buf = out.get_array()
            i = pos[0] % n_sig
            k = min(frames, n_sig - i)
            buf[:k] = sig[i:i + k]
            if k < frames:
                buf[k:] = sig[:frames - k]
            pos[0] += frames

        player.set_process_callback(process)
        player.activate()
        daemon = Daemon(["effect", "--model", str(args.model), "--mapping", "", "--no-virtual"],
                        env=server.env, cwd=REPO)
        try:
            daemon.wait_log("audio:", timeout=60)
            wait_for(lambda: rec.client.get_ports(name_pattern="^CANNe-audio.*in", is_input=True,
                                                  is_audio=True), 30, 0.1, "effect input")
            dst = rec.client.get_ports(name_pattern="^CANNe-audio.*in", is_input=True, is_audio=True)[0]
            rec.client.connect(out.name, dst.name)
            src = rec.client.get_ports(name_pattern="^CANNe-audio", is_output=True, is_audio=True)[0]
            rec.client.connect(src.name, rec.ports[0].name)
            rec.client.connect(out.name, rec.ports[1].name)
            rec.wait_frames(2 * rate, timeout=30)
            for _ in range(args.trials):
                mark = rec.mark()
                rec.wait_frames(rate, timeout=30)
                y = rec.since(mark).astype(np.float64)
                from scipy.signal import correlate

                n = len(y) // 2
                cc = correlate(y[:, 0], y[:n, 1], mode="valid", method="fft")  # lags 0..len-n
                lag = int(np.argmax(np.abs(cc[: rate // 4])))
                lags.append(lag)
                print(f"latency {lag} samples = {1e3 * lag / rate:.1f} ms", flush=True)
        finally:
            daemon.kill()
            player.deactivate()
            player.close()
            rec.close()
    bound = m.n_fft + args.period + m.hop_length
    med = float(np.median(lags)) if lags else float("nan")
    print(f"{Path(args.model).name}: n_fft {m.n_fft}, hop {m.hop_length}; median latency {med:.0f} samples "
          f"= {1e3 * med / rate:.1f} ms at {rate} Hz, period {args.period} "
          f"(bound n_fft + block + hop = {bound} samples = {1e3 * bound / rate:.1f} ms); {len(lags)} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main())
