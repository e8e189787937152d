"""What a benchmark ran on: cores, CPU model, GPU if any, date."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time


SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo() -> tuple[str, list[str]]:
    """CPU model name and the SPEED_FLAGS it has (from /proc/cpuinfo's first processor)."""
    cpu = platform.processor() or "unknown"
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and cpu == (platform.processor() or "unknown"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    present = set(line.split(":", 1)[1].split())
                    flags = [f for f in SPEED_FLAGS if f in present]
    except OSError:
        pass
    return cpu, flags


def cpu_flags() -> list[str]:
    return _cpuinfo()[1]


def machine_description() -> dict:
    cpu, flags = _cpuinfo()
    gpu = "none"
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        gpu = proc.stdout.strip().replace("\n", ", ") or "none"
    return {"cores": os.cpu_count(), "cpu": cpu, "cpu_flags": " ".join(flags), "gpu": gpu, "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version()}
