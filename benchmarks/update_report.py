"""Re-run the engine benchmarks and refresh their figures in BENCHMARKS.md.

    python -m benchmarks.update_report            # ~3 min; rewrites the figures block

Only the text between ``<!-- engine-figures:begin -->`` and ``<!-- engine-figures:end -->``
is replaced (machine header, then each script's output under its exact command); the
prose and notes around it, and other sections (the daemon's), are left as they are.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- engine-figures:begin -->", "<!-- engine-figures:end -->"
RUNS = [
    ("Machine", "benchmarks.machine"),
    ("Phase quality", "benchmarks.phase_quality"),
    ("Engine speed", "benchmarks.engine_speed"),
    ("Pitch accuracy", "benchmarks.pitch_accuracy"),
]


def run(module: str) -> str:
    proc = subprocess.run([sys.executable, "-m", module], cwd=REPO, capture_output=True,
                          text=True, timeout=1200)
    text = proc.stdout.rstrip()
    if proc.returncode not in (0, 1) or "Traceback" in proc.stderr:
        text += f"\n\n(exit {proc.returncode})\n" + proc.stderr[-2000:]
    return text


def render_output(text: str) -> str:
    """Markdown tables stay tables; every other line goes into a text block."""
    out, block = [], []

    def flush():
        while block and not block[-1].strip():
            block.pop()
        while block and not block[0].strip():
            block.pop(0)
        if block:
            out.append("```text\n" + "\n".join(block) + "\n```")
        block.clear()

    table = []
    for line in text.splitlines():
        if line.startswith("|"):
            flush()
            table.append(line)
            continue
        if table:
            out.append("\n".join(table))
            table = []
        block.append(line)
    if table:
        out.append("\n".join(table))
    flush()
    return "\n\n".join(out)


def main() -> int:
    parts = [BEGIN]
    for title, module in RUNS:
        print(f"running {module} ...", flush=True)
        parts.append(f"### {title}\n\n`python -m {module}`\n\n" + render_output(run(module)))
    parts.append(END)
    block = "\n\n".join(parts)
    path = REPO / "BENCHMARKS.md"
    doc = path.read_text() if path.exists() else ""
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        doc = head + block + tail
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)
    print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
