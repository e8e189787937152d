"""Realistic inputs for the load tests: mel windows of real speech, face crops and frames of the
bundled presenter; and the standard end-to-end workload (720p 25 fps presenter clip + speech)."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from lipsync_triton.export.model_config import OPENVINO_CACHE_DIR, model_configs
from lipsync_triton.export.repository import ExportOptions, export_repository
from lipsync_triton.preprocessing.audio import load_mel
from lipsync_triton.preprocessing.mel import mel_windows
from lipsync_triton.preprocessing.crops import crop_face
from lipsync_triton.preprocessing.faces import Letterbox
from lipsync_triton.samples import DEMO_TEXT, presenter_frames, write_presenter_clip, write_speech

# Where the bundled presenter's face lies in a 1280x720 frame (measured once with the detector).
PRESENTER_FACE_BOX = np.array([560, 120, 760, 360])


def model_inputs(work: Path, samples: int = 8) -> dict[str, list[dict[str, np.ndarray]]]:
    """{model: [ {input name: array without batch axis}, ... ]} from real speech and frames."""
    speech = write_speech(work / "perf_speech.wav")
    windows, n = mel_windows(load_mel(speech), 25.0)
    frames = list(presenter_frames(samples / 25.0, 25.0, 1280, 720))
    pick = np.linspace(0, n - 1, samples).astype(int)
    letterbox = Letterbox(384, 640)
    return {
        "wav2lip": [{"mel": windows[p], "face": crop_face(frames[i % len(frames)], PRESENTER_FACE_BOX)} for i, p in enumerate(pick)],
        "face_detector": [{"image": letterbox.apply(f)[0]} for f in frames],
    }


def write_perf_analyzer_data(entries: list[dict[str, np.ndarray]], path: Path) -> Path:
    """perf_analyzer --input-data JSON: float tensors as content lists, uint8 tensors as base64."""
    data = []
    for entry in entries:
        item = {}
        for name, array in entry.items():
            if array.dtype == np.uint8:
                item[name] = {"b64": base64.b64encode(array.tobytes()).decode(), "shape": list(array.shape)}
            else:
                item[name] = {"content": array.astype(np.float32).ravel().tolist(), "shape": list(array.shape)}
        data.append(item)
    path.write_text(json.dumps({"data": data}))
    return path


def _link_tree(src: Path, dst: Path) -> None:
    """Copy a repository with hard links for the (large) model files."""
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=link)


def variant_repository(repo: Path, dst: Path, dynamic_batching: bool = True, cpu_runtime: str = "openvino") -> Path:
    """The same models (hard links) with configs re-rendered from the one declaration: batcher on or
    off, OpenVINO or ONNX Runtime. Its OpenVINO cache starts empty, so a first start is a cold one."""
    shutil.rmtree(dst, ignore_errors=True)
    _link_tree(repo, dst)
    size = json.loads((repo / "export.json").read_text())["detector_size"]
    for cfg in model_configs("cpu", tuple(size), dynamic_batching=dynamic_batching, cpu_runtime=cpu_runtime):
        target = dst / cfg.model.name / "config.pbtxt"
        target.unlink()
        target.write_text(cfg.to_pbtxt())
        shutil.rmtree(dst / cfg.model.name / OPENVINO_CACHE_DIR, ignore_errors=True)
    return dst


def ensure_repository(work: Path, repository: Path | None) -> Path:
    """The repository to benchmark: the given one, or a random-weight CPU export kept in `work`."""
    if repository is not None:
        return repository
    repository = work / "model_repository"
    if not (repository / "export.json").exists():
        export_repository(ExportOptions(out=repository, random_weights=True))
    return repository


def e2e_workload(work: Path, seconds: float, width: int = 1280, height: int = 720, fps: float = 25.0) -> tuple[Path, Path]:
    """A presenter clip of `seconds` and a speech track of the same length (espeak-ng, trimmed)."""
    work.mkdir(parents=True, exist_ok=True)
    clip = work / f"presenter_{width}x{height}_{seconds:g}s.mp4"
    speech = work / f"speech_{seconds:g}s.wav"
    if not clip.exists():
        write_presenter_clip(clip, seconds, fps, width, height)
    if not speech.exists():
        raw = write_speech(work / "speech_long.wav", DEMO_TEXT, repeat=max(1, int(seconds / 7) + 1))
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(raw), "-t", f"{seconds:g}", str(speech)], check=True)
    return clip, speech


def lecture_workload(work: Path, minutes: float) -> tuple[Path, Path]:
    """A still presenter photo and `minutes` of stereo 44.1 kHz mp3 speech (espeak-ng looped), the
    shape of a recorded lecture: exercises chunked decoding, the mean downmix and resampling."""
    import cv2

    from lipsync_triton.samples import astronaut_bgr

    work.mkdir(parents=True, exist_ok=True)
    photo = work / "presenter_photo.png"
    if not photo.exists():
        cv2.imwrite(str(photo), astronaut_bgr())
    speech = work / f"lecture_{minutes:g}min.mp3"
    if not speech.exists():
        raw = write_speech(work / "speech_long.wav", DEMO_TEXT, repeat=3)
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", "-1", "-i", str(raw), "-t", f"{minutes * 60:g}",
                        "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", "96k", str(speech)], check=True)
    return photo, speech
