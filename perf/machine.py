"""What a benchmark ran on: cores, CPU model, GPU if any, date."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time


def machine_description() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        gpu = proc.stdout.strip().replace("\n", ", ") or "none"
    return {"cores": os.cpu_count(), "cpu": cpu, "gpu": gpu, "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version()}
