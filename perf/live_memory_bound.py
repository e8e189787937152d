"""The API's memory at LIPSYNC_LIVE_MAX_SESSIONS (6) live sessions, each holding a 1280x720 25 fps
presenter (4 s: 100 frames, ~138 MB decoded), and the 7th refused: the bound stated in the README's
security table. Run from the repository root: .venv/bin/python perf/live_memory_bound.py [WORKDIR]
(a real tritonserver and `lipsync api`, started by the tests' harness)."""
from __future__ import annotations

import sys
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from service_harness import Service  # noqa: E402

from lipsync_triton.export.repository import ExportOptions, export_repository  # noqa: E402
from lipsync_triton.samples import write_presenter_clip  # noqa: E402
from lipsync_triton.serving.server import TritonServer  # noqa: E402

SESSIONS = 6


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "model_repository"
    if not repo.exists():
        export_repository(ExportOptions(out=repo, profile="cpu", random_weights=True, seed=0))
    clip = write_presenter_clip(work / "presenter-720p.mp4", 4.0, fps=25, width=1280, height=720)
    keys = ",".join(f"t{i}:key-tenant-{i}-for-measuring" for i in range(SESSIONS))
    server = TritonServer(repo, log_path=work / "tritonserver.log").start()
    try:
        with Service(work / "data", server.grpc_url, keys=keys, workers=0) as svc:
            api = psutil.Process(svc.proc.pid)
            print(f"idle: {api.memory_info().rss / 2**20:.0f} MB")
            for i in range(SESSIONS + 1):
                tenant = i % SESSIONS
                with open(clip, "rb") as f:
                    answer = httpx.post(f"{svc.base}/v1/live/sessions", files={"face": ("p.mp4", f)}, timeout=300,
                                        headers={"Authorization": f"Bearer key-tenant-{tenant}-for-measuring"})
                what = f"{i + 1} sessions" if answer.status_code == 201 else f"session {i + 1}: {answer.status_code} " \
                                                                              f"{answer.json()['detail'][:70]}"
                print(f"{what}: {api.memory_info().rss / 2**20:.0f} MB")
    finally:
        server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "out/live-memory"))
