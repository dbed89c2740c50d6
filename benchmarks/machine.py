"""Print the machine and software versions for the header of BENCHMARKS.md.

    python -m benchmarks.machine
"""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys


def lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.strip().lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def training_jobs() -> list[str]:
    """Command lines (shortened) of running training jobs (canne-train or training.*)."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,args"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    jobs = []
    for line in out.splitlines()[1:]:
        if ("canne-train" in line or "training." in line) and "benchmarks.machine" not in line:
            jobs.append(" ".join(line.split())[:110])
    return jobs


def main() -> int:
    import numpy
    import onnxruntime
    import scipy

    print(f"date (UTC): {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}")
    print(f"CPU: {lscpu_model()}, {os.cpu_count()} logical cores; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"Python {platform.python_version()} ({sys.implementation.name}), numpy {numpy.__version__}, "
          f"scipy {scipy.__version__}, onnxruntime {onnxruntime.__version__}")
    jobs = training_jobs()
    print(f"training jobs running (%CPU, command): {len(jobs) or 'none'}")
    for j in jobs:
        print(f"  {j}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
