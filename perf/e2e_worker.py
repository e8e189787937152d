"""One lip-sync job in its own process, so its peak RSS is the job's alone. Prints one JSON line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from lipsync_triton import log
from lipsync_triton.client.generate import GenerateOptions, generate


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--face", required=True)
    p.add_argument("--audio", required=True)
    p.add_argument("--outfile", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--fps", type=float, default=25.0, help="output fps for a still image")
    p.add_argument("--detect-every", type=int, default=GenerateOptions.detect_every)
    p.add_argument("--keyframe-every", type=int, default=GenerateOptions.keyframe_every)
    args = p.parse_args()
    log.set_quiet(True)
    result = generate(args.face, args.audio, args.outfile, [args.url],
                      GenerateOptions(use_cache=not args.no_cache, cache_dir=Path(args.cache_dir), fps=args.fps,
                                      detect_every=args.detect_every, keyframe_every=args.keyframe_every))
    print(json.dumps(result.as_dict() | {"client_peak_rss_mb": round(peak_rss_mb(), 1)}))


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM: the peak resident set of this process image. (getrusage's ru_maxrss survives exec and
    would report the parent's peak for a child started by a large benchmark process.)"""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    main()
