"""The layout of the service's storage, decided here and nowhere else. Keys are made by the service
from ids, never from a user's file name:

    inputs/<tenant>/<job>/face, .../audio   a job's uploaded inputs (deleted with the job, or by retention)
    presenters/<tenant>/<presenter>/face    a registered presenter (deleted with it, or by retention)
    results/<tenant>/<job>.mp4, .jpg        its result and thumbnail
    tenants/<tenant>/...                    files a tenant placed itself, readable as face_url/audio_url
"""
from __future__ import annotations


def job_inputs(tenant: str, job_id: str) -> str:
    """The folder of a job's inputs (delete it to delete both)."""
    return f"inputs/{tenant}/{job_id}"


def job_face(tenant: str, job_id: str) -> str:
    return f"{job_inputs(tenant, job_id)}/face"


def job_audio(tenant: str, job_id: str) -> str:
    return f"{job_inputs(tenant, job_id)}/audio"


def presenter_face(tenant: str, presenter_id: str) -> str:
    return f"presenters/{tenant}/{presenter_id}/face"


def job_result(tenant: str, job_id: str) -> str:
    return f"results/{tenant}/{job_id}.mp4"


def job_thumbnail(tenant: str, job_id: str) -> str:
    return f"results/{tenant}/{job_id}.jpg"


def tenant_files(tenant: str) -> str:
    """The prefix under which a tenant's own files may be named by URL (with a trailing slash)."""
    return f"tenants/{tenant}/"
