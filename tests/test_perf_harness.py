"""The benchmark harness runs end to end in a tiny mode, so it cannot rot. (Numbers come from the
full runs recorded in perf/BENCHMARKS.md, never from timed tests.)"""
import json
import subprocess

from conftest import ROOT

LIPSYNC = str(ROOT / ".venv" / "bin" / "lipsync")


def test_perf_models_tiny(exported_repo, tmp_path):
    proc = subprocess.run([LIPSYNC, "perf", "models", "--tiny", "--model-repository", str(exported_repo), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "models.json").read_text())
    for model in ("wav2lip", "face_detector"):
        r = results["models"][model]
        assert r["triton_c1_per_s"] > 0 and r["inprocess_per_s"] > 0 and r["overhead_ratio"] > 0
        assert (tmp_path / f"{model}_sweep.csv").read_text().startswith("Concurrency,Inferences/Second")
        assert (tmp_path / f"{model}_throughput_latency.png").read_bytes()[:4] == b"\x89PNG"
    rows = results["dynamic_batching"]["face_detector"]
    assert [r["concurrency"] for r in rows] == [1, 4] and all(r["ratio"] > 0 for r in rows)
    assert (tmp_path / "face_detector_dynamic_batching.png").exists()
    assert "| wav2lip |" in proc.stdout


def test_perf_e2e_tiny(exported_repo, tmp_path):
    proc = subprocess.run([LIPSYNC, "perf", "e2e", "--tiny", "--model-repository", str(exported_repo), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "e2e.json").read_text())
    runs = results["runs"]
    assert [(r["seconds_of_video"], r["presenter_cache"]) for r in runs] == [(1.0, False), (1.0, True), (2.0, False), (2.0, True)]
    assert all(r["cache_hit"] == r["presenter_cache"] for r in runs)
    assert all(r["frames_per_second"] > 0 and r["client_peak_rss_mb"] > 0 for r in runs)
    assert set(runs[0]["stages"]) == {"decode", "mel", "detect", "generate", "paste", "encode"}
    assert results["server_peak_rss_mb"] > 0 and results["client_rss_ratio"]["ratio"] > 0
