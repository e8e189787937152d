"""One lip-sync job in its own process, so its peak RSS is the job's alone. Prints one JSON line."""
from __future__ import annotations

import argparse
import json
import resource
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
    args = p.parse_args()
    log.set_quiet(True)
    result = generate(args.face, args.audio, args.outfile, [args.url],
                      GenerateOptions(use_cache=not args.no_cache, cache_dir=Path(args.cache_dir)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result.as_dict() | {"client_peak_rss_mb": round(peak_mb, 1)}))


if __name__ == "__main__":
    main()
