"""The README's main job: export (random weights unless LIPSYNC_CHECKPOINT names a real
checkpoint), start the embedded Triton server, and lip-sync the bundled sample to OUT/demo.mp4."""
from __future__ import annotations

import os
from pathlib import Path

from lipsync_triton import log
from lipsync_triton.client.generate import LipSyncClient
from lipsync_triton.client.progress import terminal_progress
from lipsync_triton.export.repository import ExportOptions, export_repository
from lipsync_triton.samples import write_presenter_clip, write_speech
from lipsync_triton.serving.server import TritonServer

SAMPLE_SECONDS = 4.0  # the clip loops under the longer speech, as the reference does


def write_sample_inputs(out: Path, keep: bool = False) -> tuple[Path, Path]:
    """The demo's inputs: OUT/presenter.mp4 (the bundled presenter) and OUT/speech.wav (espeak-ng);
    with `keep`, files already there are left as they are."""
    out.mkdir(parents=True, exist_ok=True)
    clip, speech = out / "presenter.mp4", out / "speech.wav"
    if not (keep and clip.is_file()):
        write_presenter_clip(clip, SAMPLE_SECONDS)
    if not (keep and speech.is_file()):
        write_speech(speech)
    log.event("sample_inputs", presenter=str(clip), speech=str(speech))
    return clip, speech


def run_demo(out: Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = os.environ.get("LIPSYNC_CHECKPOINT")
    if checkpoint:
        log.event("demo_weights", source=f"checkpoint {checkpoint} (LIPSYNC_CHECKPOINT)")
    else:
        log.warn("demo uses RANDOM Wav2Lip weights: the mouth will be a grey blur. "
                 "Set LIPSYNC_CHECKPOINT=/path/to/wav2lip_gan.pth for real lip-sync")
    repo = out / "model_repository"
    export_repository(ExportOptions(out=repo, profile="cpu", checkpoint=Path(checkpoint) if checkpoint else None,
                                    random_weights=not checkpoint))
    clip, speech = write_sample_inputs(out)
    with TritonServer(repo, log_path=out / "tritonserver.log") as server, terminal_progress("lip-sync") as (progress,):
        result = LipSyncClient(server.grpc_url, cache_dir=out / "cache").generate(clip, speech, out / "demo.mp4", progress=progress)
    log.event("demo_done", outfile=result.outfile, frames=result.frames, frames_per_s=result.frames_per_second,
              weights="checkpoint" if checkpoint else "RANDOM")
    return Path(result.outfile)
