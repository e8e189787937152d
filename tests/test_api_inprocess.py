"""The REST API in-process (FastAPI's TestClient, SQLite in a temporary folder): request validation
and tenant scoping, in milliseconds. The real-process service tests (test_service*.py) stay."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lipsync_triton.service.api import create_app
from lipsync_triton.service.db import Job, JobStatus, migrate, new_id, session_scope, utcnow
from lipsync_triton.service.settings import Settings

ACME, GLOBEX = {"Authorization": "Bearer key-acme"}, {"Authorization": "Bearer key-globex"}


@pytest.fixture()
def api(tmp_path):
    settings = Settings(data_dir=tmp_path, api_keys="acme:key-acme,globex:key-globex")
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
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "key-acme"}):
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
