"""Security round 2: what a signed-in tenant (or a hostile page, or a key guesser) tries against the
surfaces added after the first round: the web UI's functions, its sign-in, batch archives,
presenters, webhooks and the keys themselves. Each test is named for the attack it stops; the live
mode's attacks (`say`, huge presenters) are in test_live_service.py."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from service_harness import Service

KEYS = "acme:key-acme-for-tests,globex:key-globex-for-tests"
SECRET_ENV = "LIPSYNC_TEST_SECRET_IN_ENVIRON"


@pytest.fixture(scope="module")
def ui_service(tmp_path_factory):
    """The API + web UI without a worker or Triton (jobs stay queued): the UI's own surface."""
    env = {"LIPSYNC_WORKER_PROCESSES": "0", "LIPSYNC_OPS_KEY": "ops-key-for-the-tests", SECRET_ENV: "s3cr3t-value-0123"}
    with Service(tmp_path_factory.mktemp("ui-attacks") / "data", "127.0.0.1:1", keys=KEYS, workers=0, extra_env=env) as svc:
        yield svc


def _signed_in(svc: Service, tenant: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=svc.base, timeout=60)
    answer = client.post("/ui/login", data={"username": tenant, "password": key})
    assert answer.status_code == 200, answer.text
    return client


def _upload(client: httpx.Client, name: str, data: bytes) -> str:
    answer = client.post("/ui/gradio_api/upload", files=[("files", (name, data))])
    assert answer.status_code == 200, answer.text
    return answer.json()[0]


def _call(client: httpx.Client, api_name: str, data: list) -> str:
    """A UI function called as Gradio's client does: the event, then its result stream (as text)."""
    started = client.post(f"/ui/gradio_api/call/{api_name}", json={"data": data})
    if started.status_code != 200:
        return f"refused {started.status_code}: {started.text}"
    return client.get(f"/ui/gradio_api/call/{api_name}/{started.json()['event_id']}").text


def _file_functions(client: httpx.Client) -> list[tuple[str, list]]:
    """Every function the UI registers that takes a file, from the app's own config (so a function
    added later is covered), with its inputs' defaults: (api_name, [(component id, kind, default)])."""
    config = client.get("/ui/config").json()
    components = {c["id"]: c for c in config["components"]}
    found = []
    for dep in config["dependencies"]:
        inputs = [(i, components[i]["type"], components[i].get("props", {})) for i in dep["inputs"]]
        if any(kind == "file" for _, kind, _ in inputs):
            found.append((dep["api_name"], inputs))
    return found


def _inputs(inputs: list, file_data: dict) -> list:
    return [([file_data] if props.get("file_count") == "multiple" else file_data) if kind == "file" else props.get("value")
            for _, kind, props in inputs]


def test_no_ui_function_reads_a_server_file_another_users_upload_or_a_url(ui_service, media):
    acme = _signed_in(ui_service, "acme", "key-acme-for-tests")
    globex = _signed_in(ui_service, "globex", "key-globex-for-tests")
    theirs = _upload(globex, "victim.mp4", media["clip"].read_bytes())
    mine = _upload(acme, "mine.mp4", media["clip"].read_bytes())
    functions = _file_functions(acme)
    assert {"run_single", "run_batch"} <= {name for name, _ in functions} and len(functions) >= 4, functions
    targets = {"the API process's environment": "/proc/self/environ",
               "the job database": str(ui_service.data_dir / "jobs.db"),
               "another user's upload": theirs,
               "a URL": "http://127.0.0.1:9/secret.mp4"}
    jobs_before = httpx.get(f"{ui_service.base}/v1/jobs", headers={"Authorization": "Bearer key-acme-for-tests"}).json()["total"]
    for name, inputs in functions:
        for what, path in targets.items():
            file_data = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.mp4"}
            if what == "a URL":
                file_data["url"] = path
            answer = _call(acme, name, _inputs(inputs, file_data))
            assert "event: complete" not in answer and "generating" not in answer, (name, what, answer[:300])
            assert "s3cr3t-value-0123" not in answer and "file=" not in answer, (name, what, answer[:300])
    jobs_after = httpx.get(f"{ui_service.base}/v1/jobs", headers={"Authorization": "Bearer key-acme-for-tests"}).json()["total"]
    assert jobs_after == jobs_before, "nothing was submitted as acme's job"
    environ = acme.get("/ui/gradio_api/file=/proc/self/environ")
    assert environ.status_code in (403, 404) and b"s3cr3t" not in environ.content
    # The caller's own upload still previews: the check refuses what is not yours, not everything.
    preview = _call(acme, "preview_face", [{"path": mine, "meta": {"_type": "gradio.FileData"}, "orig_name": "mine.mp4"}])
    assert "event: complete" in preview and "mine.mp4" in preview, preview[:300]


def test_a_cross_site_form_cannot_sign_a_browser_into_the_attackers_tenant(ui_service):
    form = {"username": "acme", "password": "key-acme-for-tests"}
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
                    {"Origin": "null"}):
        answer = httpx.post(f"{ui_service.base}/ui/login", data=form, headers=headers)
        assert answer.status_code == 403 and "another site" in answer.json()["detail"], (headers, answer.text)
        assert "set-cookie" not in answer.headers
    same = httpx.post(f"{ui_service.base}/ui/login", data=form,
                      headers={"Origin": ui_service.base, "Sec-Fetch-Site": "same-origin"})
    cookies = same.headers.get_list("set-cookie")
    assert same.status_code == 200 and cookies, same.text
    assert all("samesite=lax" in c.lower() and "samesite=none" not in c.lower() for c in cookies), cookies


def test_keys_cannot_be_guessed_at_full_speed(tmp_path):
    """6 failures a minute per address (the fixture's setting): then 429 with Retry-After, for the
    right key too, on the REST API and at the UI's sign-in alike. A fresh service: the shared
    fixture's address must not be locked out for the other tests."""
    env = {"LIPSYNC_WORKER_PROCESSES": "0", "LIPSYNC_AUTH_FAILURES_PER_MINUTE": "6"}
    with Service(tmp_path / "data", "127.0.0.1:1", keys=KEYS, workers=0, extra_env=env) as svc:
        codes = [httpx.get(f"{svc.base}/v1/jobs", headers={"Authorization": f"Bearer guess-{i:012d}"}).status_code
                 for i in range(6)]
        assert codes == [401] * 6
        locked = httpx.get(f"{svc.base}/v1/jobs", headers={"Authorization": "Bearer key-acme-for-tests"})
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1, locked.text
        assert "\n" not in locked.json()["detail"] and "wait" in locked.json()["detail"]
        login = httpx.post(f"{svc.base}/ui/login", data={"username": "acme", "password": "key-acme-for-tests"})
        assert login.status_code == 429 and "retry-after" in login.headers
        assert httpx.get(f"{svc.base}/healthz").status_code == 200  # what a load balancer needs is never locked


def test_a_short_api_key_stops_the_service_at_start_up(tmp_path):
    env = {**os.environ, "LIPSYNC_DATA_DIR": str(tmp_path / "d"), "LIPSYNC_API_KEYS": "acme:short-key",
           "LIPSYNC_WORKER_PROCESSES": "0"}
    done = subprocess.run([sys.executable, "-m", "lipsync_triton.cli", "api", "--port", "0"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "at least 16" in last and "LIPSYNC_MIN_KEY_LENGTH" in last and "short-key" not in last, last


# --- batch archives ---------------------------------------------------------------------------

FAKE_MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_huge_manifest_is_refused_without_being_read_whole(tmp_path):
    import tracemalloc

    from lipsync_triton.service.jobs import InputError
    from lipsync_triton.service.zip_manifest import read_zip_batch

    def count_items(archive: Path) -> None:  # the manifest's rows are read before anything is extracted
        read_zip_batch(archive, tmp_path, 1 << 20, 1 << 20, before_extracting=lambda count: pytest.fail("read whole"))

    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(_zip({"manifest.csv": b"face,audio\n" + b"a.mp4,b.wav," + b"x" * (200 << 20) + b"\n"}))
    assert bomb.stat().st_size < 1 << 20  # a small upload that expands to 200 MB
    tracemalloc.start()
    with pytest.raises(InputError, match="manifest.csv is larger than"):
        count_items(bomb)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20, f"reading the manifest took {peak / 2**20:.0f} MB"
    rows = tmp_path / "rows.zip"
    rows.write_bytes(_zip({"manifest.csv": b"face,audio\n" + b"a.mp4,b.wav\n" * 5000}))
    with pytest.raises(InputError, match="more than 1000 items"):
        count_items(rows)


def test_one_member_named_in_every_row_is_extracted_once_within_a_budget(tmp_path, media):
    from lipsync_triton.service.zip_manifest import read_zip_batch

    big = FAKE_MP4_HEAD + bytes(8 << 20)  # 8 MB that starts like an mp4 and compresses to kilobytes
    archive = tmp_path / "batch.zip"
    archive.write_bytes(_zip({"manifest.csv": b"face,audio\n" + b"face.mp4,speech.wav\n" * 50 + b"notes.txt,speech.wav\n",
                              "face.mp4": big, "speech.wav": media["speech"].read_bytes(), "notes.txt": b"hello"}))
    work = tmp_path / "work"
    work.mkdir()
    items = read_zip_batch(archive, work, max_bytes=64 << 20, budget_bytes=40 << 20)
    extracted = sorted(p.name for p in work.iterdir())
    assert len(extracted) == 3, extracted  # face.mp4, speech.wav and notes.txt: each once
    assert sum(p.stat().st_size for p in work.iterdir()) < 10 << 20
    ok = [i for i in items if i.error is None]
    over = [i for i in items if i.error and "extracted-size budget" in i.error]
    assert len(ok) == 4 and len(over) == 46, [i.error for i in items][:6]  # 4 x (8 MB + speech) fit in 40 MB
    assert "not a video, photo or audio file" in items[-1].error  # sniffed before it was extracted further


def test_a_zip_batch_over_the_job_limit_is_refused_before_extraction(tmp_path, media):
    env = {"LIPSYNC_WORKER_PROCESSES": "0", "LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT": "3"}
    body = _zip({"manifest.csv": b"face,audio\n" + b"face.mp4,speech.wav\n" * 4, "face.mp4": FAKE_MP4_HEAD + bytes(64 << 20),
                 "speech.wav": media["speech"].read_bytes()})
    with Service(tmp_path / "data", "127.0.0.1:1", keys=KEYS, workers=0, extra_env=env) as svc, svc.client() as api:
        answer = api.post("/v1/batches", files={"archive": ("batch.zip", body)})
        assert answer.status_code == 429 and "the limit is 3" in answer.json()["detail"], answer.text
        assert not any((svc.data_dir / "tmp").rglob("member*")), "nothing was extracted"


# --- presenters and webhooks --------------------------------------------------------------------

def test_presenter_registrations_count_as_active_work_and_have_a_quota(tmp_path, media):
    env = {"LIPSYNC_WORKER_PROCESSES": "0", "LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT": "3", "LIPSYNC_MAX_PRESENTERS_PER_TENANT": "4"}
    clip = media["clip"].read_bytes()
    with Service(tmp_path / "data", "127.0.0.1:1", keys=KEYS, workers=0, extra_env=env) as svc:
        with svc.client() as acme:
            codes = [acme.post("/v1/presenters", files={"face": (f"p{i}.mp4", clip)}).status_code for i in range(4)]
            assert codes == [202, 202, 202, 429], codes  # three preparing: the tenant's active work is full
            job = acme.post("/v1/jobs", files={"face": ("p.mp4", clip), "audio": ("s.wav", media["speech"].read_bytes())})
            assert job.status_code == 429 and "presenter" in job.json()["detail"], job.text
        with svc.client("key-globex-for-tests") as globex:  # another tenant is not held up by acme's
            assert globex.post("/v1/presenters", files={"face": ("g.mp4", clip)}).status_code == 202
    env |= {"LIPSYNC_MAX_ACTIVE_JOBS_PER_TENANT": "100", "LIPSYNC_MAX_PRESENTER_MB_PER_TENANT": str(2.5 * len(clip) / 2**20)}
    with Service(tmp_path / "data2", "127.0.0.1:1", keys=KEYS, workers=0, extra_env=env) as svc, svc.client() as acme:
        codes = [acme.post("/v1/presenters", files={"face": (f"p{i}.mp4", clip)}) for i in range(3)]
        assert [c.status_code for c in codes] == [202, 202, 429]
        assert "LIPSYNC_MAX_PRESENTER_MB_PER_TENANT" in codes[-1].json()["detail"]
        assert len(acme.get("/v1/presenters").json()["presenters"]) == 2
        stored = list((svc.data_dir / "files").rglob("*"))
        assert sum(p.is_file() for p in stored) == 2, "a refused presenter leaves no file"


def test_a_presenter_whose_header_understates_its_length_stops_at_the_limit(tmp_path):
    import struct

    from lipsync_triton.preprocessing.media_input import MediaLimits, MediaTooLong
    from lipsync_triton.preprocessing.video import FrameSource

    long = tmp_path / "long.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:duration=30", "-c:v", "libx264",
                    "-f", "matroska", str(long)], check=True)
    data = bytearray(long.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Matroska's Duration element (8-byte float, ms)
    data[at + 3:at + 11] = struct.pack(">d", 1000.0)
    lying = tmp_path / "lying.mkv"
    lying.write_bytes(bytes(data))
    source = FrameSource(lying, limits=MediaLimits(max_seconds=10))
    assert source.info.stated_seconds == pytest.approx(1.0)  # the header's claim passed the first check
    decoded = 0
    with pytest.raises(MediaTooLong, match="the limit is 10 s"):
        for _ in source.frames():
            decoded += 1
    assert decoded <= 11 * 25 + 1
    with pytest.raises(MediaTooLong):  # the detector's sampled decode (what presenter tracking uses) too
        for _ in source.sampled_frames((64, 64), (64, 64), 8):
            pass
