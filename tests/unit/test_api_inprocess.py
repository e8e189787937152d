"""The REST API in-process (FastAPI's TestClient, SQLite in a temporary folder): request validation
and tenant scoping, in milliseconds. The real-process service tests (test_service*.py) stay."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lipsync_triton.service.api import create_app
from lipsync_triton.service.db import Job, JobStatus, new_id, session_scope, utcnow
from lipsync_triton.service.schema import migrate
from lipsync_triton.service.settings import Settings

ACME, GLOBEX = {"Authorization": "Bearer key-acme-for-tests"}, {"Authorization": "Bearer key-globex-for-tests"}


@pytest.fixture()
def api(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys="acme:key-acme-for-tests,globex:key-globex-for-tests")
    migrate(settings.database)
    with session_scope(settings.database) as s:  # a finished job of acme's, made without running it
        job = Job(id=new_id(), tenant="acme", name="talk", status=JobStatus.FAILED, error="no face", options={},
                  attempts=1, cancel_requested=False, progress=0.0, created_at=utcnow(), finished_at=utcnow())
        s.add(job)
    client = TestClient(create_app(settings))
    client.job_id = job.id
    return client


def test_every_v1_endpoint_needs_a_key(api):
    for method, path in (("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{api.job_id}"), ("POST", "/v1/jobs"),
                         ("DELETE", f"/v1/jobs/{api.job_id}"), ("POST", "/v1/batches"), ("GET", "/v1/webhook-secret")):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-acme-for-tests"}):
            answer = api.request(method, path, headers=headers)
            assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", (method, path, headers)


def test_another_tenants_job_is_indistinguishable_from_a_missing_one(api):
    assert api.get(f"/v1/jobs/{api.job_id}", headers=ACME).json()["error"] == "no face"
    missing = api.get(f"/v1/jobs/{new_id()}", headers=GLOBEX)
    for method, suffix in (("GET", ""), ("GET", "/result"), ("GET", "/thumbnail"), ("POST", "/cancel"), ("DELETE", "")):
        theirs = api.request(method, f"/v1/jobs/{api.job_id}{suffix}", headers=GLOBEX)
        assert theirs.status_code == 404 and api.job_id not in theirs.text.replace(f"no job {api.job_id}", ""), (method, suffix)
    assert missing.status_code == 404
    assert api.get("/v1/jobs", headers=GLOBEX).json()["total"] == 0
    assert api.get("/v1/jobs", headers=ACME).json()["total"] == 1
    assert api.get(f"/v1/jobs/{api.job_id}", headers=ACME).status_code == 200  # globex's DELETE changed nothing


@pytest.mark.parametrize("data, words", [
    ({}, "send both a face"),
    ({"pads": "1 2"}, "option pads"),
    ({"detect_every": "0"}, "option detect_every"),
    ({"face_url": "/etc/passwd", "audio_url": "/etc/passwd"}, "tenant's prefix"),
    ({"webhook_url": "http://example.com/"}, "webhook"),
])
def test_bad_submits_are_one_line_4xx(api, data, words):
    answer = api.post("/v1/jobs", headers=ACME, data=data)
    assert 400 <= answer.status_code < 500 and words in answer.json()["detail"], answer.text
    assert "\n" not in answer.json()["detail"]


def test_list_bounds_and_security_headers(api):
    assert api.get("/v1/jobs", headers=ACME, params={"limit": 0}).status_code == 422
    assert api.get("/v1/jobs", headers=ACME, params={"offset": -1}).status_code == 422
    answer = api.get("/healthz")
    assert answer.status_code == 200 and answer.headers["x-content-type-options"] == "nosniff"


def _submit(api, media, headers):
    with open(media["clip"], "rb") as face, open(media["speech"], "rb") as audio:
        return api.post("/v1/jobs", headers={**ACME, **headers}, files={"face": ("talk.mp4", face), "audio": ("speech.wav", audio)})


def test_a_retried_submit_with_the_same_idempotency_key_returns_the_first_job(api, media):
    from concurrent.futures import ThreadPoolExecutor

    first = _submit(api, media, {"Idempotency-Key": "order-7"})
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    again = _submit(api, media, {"Idempotency-Key": "order-7"})
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = _submit(api, media, {"Idempotency-Key": "order-8"})
    assert other.json()["id"] != first.json()["id"]
    theirs = _submit(api, media, {"Idempotency-Key": "order-7", **GLOBEX})  # keys are per tenant
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    with ThreadPoolExecutor(4) as pool:  # concurrent retries of one submission make one job
        ids = {r.json()["id"] for r in pool.map(lambda _: _submit(api, media, {"Idempotency-Key": "order-9"}), range(4))}
    assert len(ids) == 1
    assert api.get("/v1/jobs", headers=ACME).json()["total"] == 1 + 3  # the fixture's job + order-7, -8, -9
    stored = {p.parent.name for p in (api.app.state.service.settings.data_dir / "files").rglob("face")}
    assert len(stored) == 3 + 1  # the replayed retries left no inputs behind (+ globex's)
    bad = _submit(api, media, {"Idempotency-Key": "has space"})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["detail"]


def test_a_jobs_trace_context_is_the_callers_or_a_new_one(api, media):
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    traced = _submit(api, media, {"traceparent": caller})
    assert traced.headers["traceparent"] == caller
    assert api.get(f"/v1/jobs/{traced.json()['id']}", headers=ACME).json()["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    for header in ({}, {"traceparent": "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, {"traceparent": "junk"}):
        fresh = _submit(api, media, header)  # none or malformed: a new trace starts
        trace = api.get(f"/v1/jobs/{fresh.json()['id']}", headers=ACME).json()["trace_id"]
        assert len(trace) == 32 and trace != "4bf92f3577b34da6a3ce929d0e0e4736" and set(trace) != {"0"}
        assert fresh.headers["traceparent"].split("-")[1] == trace


def test_unknown_fields_and_states_are_422_not_silently_ignored(api, media):
    with open(media["clip"], "rb") as face, open(media["speech"], "rb") as audio:
        misspelt = api.post("/v1/jobs", headers=ACME, data={"pad": "1"}, files={"face": ("t.mp4", face), "audio": ("s.wav", audio)})
    assert misspelt.status_code == 422 and "unknown field 'pad'" in misspelt.json()["detail"] and "pads" in misspelt.json()["detail"]
    assert api.post("/v1/batches", headers=ACME, data={"option": "{}"}).status_code == 422
    assert api.get("/v1/jobs", headers=ACME).json()["total"] == 1  # nothing was made
    assert api.post("/v1/jobs", data={"pad": "1"}).status_code == 401  # the key is checked first
    bogus = api.get("/v1/jobs", headers=ACME, params={"status": "bogus"})
    assert bogus.status_code == 422 and "failed" in bogus.text  # names the states there are
    assert api.get("/v1/jobs", headers=ACME, params={"status": "failed"}).json()["total"] == 1


def test_finished_job_counters_never_go_down_when_jobs_are_deleted(api, media):
    def counted(status: str) -> float:
        text = api.get("/metrics").text
        line = next((ln for ln in text.splitlines() if ln.startswith(f'lipsync_jobs_finished_total{{status="{status}"}}')), None)
        return float(line.split()[-1]) if line else 0.0

    job = _submit(api, media, {}).json()["id"]
    assert counted("cancelled") == 0
    assert api.post(f"/v1/jobs/{job}/cancel", headers=ACME).json()["status"] == "cancelled"
    assert counted("cancelled") == 1
    assert api.delete(f"/v1/jobs/{job}", headers=ACME).status_code == 204
    assert counted("cancelled") == 1  # a counter: the deletion does not lower it
    assert 'lipsync_jobs{status="cancelled"}' not in api.get("/metrics").text  # the gauge shows current states


def test_home_redirects_and_docs_render_without_a_cdn(api):
    home = api.get("/", follow_redirects=False)
    assert home.status_code in (302, 307) and home.headers["location"] == "/docs"
    for page in ("/docs", "/redoc"):
        html = api.get(page).text
        assert "cdn." not in html and "googleapis" not in html and "/static-offline-docs/" in html, page
    assert api.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_job_errors_name_the_users_inputs_and_options_not_server_paths_or_flags(tmp_path):
    from lipsync_triton.errors import NoFaceFound, OptionError
    from lipsync_triton.service.user_errors import tenant_message

    work = tmp_path / "job-1234"
    assert tenant_message(NoFaceFound(work / "face"), work, "talk.mp4") == (
        "no face found in any frame of the presenter talk.mp4; use a clip with a visible frontal face "
        "or give a fixed face box (option box)")
    assert tenant_message(NoFaceFound(work / "face"), work, "talk.mp4", where="presenter") == (
        "no face found in any frame of the presenter talk.mp4; use a clip with a visible frontal face")
    assert tenant_message(OptionError("face_select", "'x': use 'largest'"), work) == "option face_select: 'x': use 'largest'"
    assert tenant_message(OptionError("crop", f"(0, 1, 0, 1) leaves an empty frame in {work}"), work) == \
        "option crop: (0, 1, 0, 1) leaves an empty frame in the job's folder"
    assert str(NoFaceFound("clip.mp4")).endswith("or pass --box")  # what the CLI says


def test_one_processes_admissions_take_turns_on_a_lock_not_on_sqlites_busy_handler(tmp_path):
    """SQLite's busy handler sleeps up to 100 ms between looks at a taken write lock, so 60 parallel
    submits to one API process waited up to 1.75 s each for a lock held for milliseconds. They must
    queue on a lock of the process instead. With SQLite's waiting switched off (busy_timeout 0),
    an admission that met another's write lock would fail with 'database is locked'."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import event, func, select

    from lipsync_triton.service.db import engine_for
    from lipsync_triton.service.jobs import admit
    from lipsync_triton.service.storage import Storage

    settings = Settings(data_dir=tmp_path, max_active_jobs_per_tenant=10_000)
    migrate(settings.database)
    engine = engine_for(settings.database)
    event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout=0"))
    engine.dispose()  # every connection from now on fails at once instead of waiting
    storage = Storage(settings.storage)

    def submit(_: int) -> None:
        with session_scope(settings.database) as s:
            job = Job(id=new_id(), tenant="acme", name="talk", status=JobStatus.QUEUED, options={}, attempts=0,
                      cancel_requested=False, progress=0.0, created_at=utcnow())
            assert admit(s, storage, settings, "acme", [job]) is None

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(submit, range(150)))
    with session_scope(settings.database) as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 150
    engine.dispose()


def test_the_web_uis_idle_queue_does_not_wake_the_api_every_millisecond(tmp_path):
    """Gradio's queue looks for work every 1 ms when idle: 8% of a core and a thousand wake-ups a
    second of the event loop that serves the REST API too (strace on an idle `lipsync api`)."""
    from lipsync_triton.service.tenants import Tenants
    from lipsync_triton.service.ui import KEEP_S, QUEUE_IDLE_POLL_S, SignIns, UploadOwners, build_ui

    ui = build_ui("http://127.0.0.1:9", SignIns(Tenants(Settings(data_dir=tmp_path, local_only=True)), UploadOwners(KEEP_S)))
    assert ui._queue.sleep_when_free >= QUEUE_IDLE_POLL_S >= 0.01
    assert ui._queue.progress_update_sleep_when_free >= 0.1


def test_the_submit_forms_documented_fields_are_the_ones_it_accepts(api, media):
    """The form's OpenAPI description is declared beside the code that reads it: every documented
    field is accepted, anything else is refused, and a field's kind (file or text) is checked."""
    schema = api.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    documented = schema["properties"]
    assert {"face", "audio", "face_url", "audio_url", "presenter_id", "webhook_url", "pads"} <= set(documented)
    for name in documented:
        answer = api.post("/v1/jobs", headers=ACME, data={name: "x"})
        assert "unknown field" not in answer.text, name
    with open(media["speech"], "rb") as audio:
        as_file = api.post("/v1/jobs", headers=ACME, files={"pads": ("p.txt", b"0 10 0 0"), "audio": ("s.wav", audio)})
    assert as_file.status_code == 422 and "'pads' must be text" in as_file.json()["detail"]
    as_text = api.post("/v1/jobs", headers=ACME, data={"face": "talk.mp4", "audio": "speech.wav"})
    assert as_text.status_code == 422 and "'face' must be a file" in as_text.json()["detail"]


def test_a_submit_writes_in_one_transaction_of_three_statements(api, media):
    """What a submit costs the database: the admission lock, the tenant's count and the insert, one
    commit (bursts of submits queue on this transaction; a query or commit more is a regression)."""
    from sqlalchemy import event

    from lipsync_triton.service.db import engine_for

    engine = engine_for(api.app.state.service.settings.database)
    statements, commits = [], []

    def executed(_conn, _cursor, sql, *_):
        statements.append(sql.split()[0].upper())

    def committed(_conn):
        commits.append(1)

    event.listen(engine, "before_cursor_execute", executed)
    event.listen(engine, "commit", committed)
    try:
        assert _submit(api, media, {}).status_code == 202
    finally:
        event.remove(engine, "before_cursor_execute", executed)
        event.remove(engine, "commit", committed)
    assert statements == ["UPDATE", "SELECT", "INSERT"], statements
    assert len(commits) == 1


def test_the_favicon_is_served_where_browsers_ask(tmp_path):
    """Browsers ask /favicon.ico of every page (a 404 in every console before)."""
    settings = Settings(data_dir=tmp_path, api_keys="acme:key-acme-for-tests")
    migrate(settings.database)
    answer = TestClient(create_app(settings)).get("/favicon.ico")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png" and answer.content[:4] == b"\x89PNG"
