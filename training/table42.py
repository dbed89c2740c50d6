"""Reproduce the shape of the thesis's Table 4.2: append option x validation SC x time.

    python -m training.table42 --corpus cache/fluidr3-one-octave --epochs 15 \
        --out runs/table42 --markdown docs/table_4_2.md

Each append option is trained with the same configuration and epoch budget, one after
another, on one thread; the best validation epoch of each is reported.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from training.corpus import load_corpus
from training.model import APPEND_OPTIONS
from training.train import TrainConfig, train

LABELS = {"none": "none", "diff1": "1st-order difference", "diff2": "2nd-order difference",
          "both": "1st + 2nd difference", "mfcc": "MFCC (20 of 40 mel bands)"}


def run_table(corpus_dir: str, out: Path, *, epochs: int, seed: int, threads: int,
              options=APPEND_OPTIONS) -> list[dict]:
    corpus = load_corpus(corpus_dir, mmap=False)
    rows = []
    for opt in options:
        run = out / opt
        summary_f = run / "summary.json"
        if not summary_f.is_file():
            cfg = TrainConfig(corpus=corpus_dir, out=str(run), epochs=epochs, seed=seed,
                              threads=threads, model={"append": opt})
            train(cfg, corpus=corpus, progress=False)
        s = json.loads(summary_f.read_text())
        rows.append({"append": opt, **s})
    return rows


def markdown(rows: list[dict], *, corpus_desc: str, epochs: int) -> str:
    lines = [
        "| append option | val SC (thesis code form, MSE/MS) | val SC (eq. 4.1, sqrt) | val SC (dB) "
        "| test SC (MSE/MS) | best epoch | training time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        v, t = r["val"], r["test"] or {}
        lines.append(f"| {LABELS[r['append']]} | {v['sc_mse']:.3f} | {v['sc_sqrt']:.3f} | "
                     f"{v['sc_db']:.2f} | {t.get('sc_mse', float('nan')):.3f} | "
                     f"{r['best_epoch']}/{r['epochs_run']} | {r['train_seconds'] / 60:.1f} min |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.table42", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--out", default="runs/table42")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--markdown", help="also write the table to this file")
    a = p.parse_args(argv)
    t0 = time.time()
    rows = run_table(a.corpus, Path(a.out), epochs=a.epochs, seed=a.seed, threads=a.threads)
    desc = load_corpus(a.corpus).meta["description"]
    table = markdown(rows, corpus_desc=desc, epochs=a.epochs)
    print(table)
    (Path(a.out) / "table.md").write_text(table)
    if a.markdown:
        Path(a.markdown).write_text(table)
    print(f"total {(time.time() - t0) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
