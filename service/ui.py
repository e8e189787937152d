"""The web UI (Gradio, mounted at /ui): a single job and a batch, through the REST API itself, so it
has exactly the API's checks, limits and tenancy.

Everything under /ui, Gradio's upload endpoint included, needs a sign-in with the tenant's name and
API key (except in local-only mode): the key is kept in this process for the session and sent to
the API on the user's behalf. Uploads obey the API's size limit and are deleted after an hour."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import gradio as gr
import httpx
from fastapi import FastAPI

from lipsync_triton.client.options import job_options

from .db import FINAL, JobStatus
from .tenants import Tenants

POLL_S = 1.0
DOWNLOADS = Path(tempfile.gettempdir()) / "lipsync-ui"
KEEP_S = 3600.0  # Gradio copies what it shows into its own cache (also pruned hourly)


def _prune_downloads() -> None:
    DOWNLOADS.mkdir(exist_ok=True)
    cutoff = time.time() - KEEP_S
    for old in DOWNLOADS.iterdir():
        if old.stat().st_mtime < cutoff:
            old.unlink(missing_ok=True)


class ApiClient:
    def __init__(self, base: str, key: str):
        self.http = httpx.Client(base_url=base, timeout=httpx.Timeout(30.0, read=600.0),
                                 headers={"Authorization": f"Bearer {key.strip()}"} if key and key.strip() else {})

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:200]
            raise gr.Error(f"{response.status_code}: {detail}")
        return response

    def download(self, path: str, suffix: str) -> str:
        _prune_downloads()
        out = tempfile.NamedTemporaryFile(prefix="result-", suffix=suffix, delete=False, dir=DOWNLOADS)
        with out, self.http.stream("GET", path) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
        return out.name


def _model_status(base: str) -> str:
    try:
        checks = httpx.get(f"{base}/readyz", timeout=10).json()["checks"]
    except Exception:
        return "Service starting..."
    triton = checks.get("triton", {})
    if not triton.get("ok"):
        return "Model initialising: jobs wait in the queue until the models are ready."
    problems = [f"{name}: {c['detail']}" for name, c in checks.items() if not c.get("ok")]
    return "Not ready: " + "; ".join(problems) if problems else "Ready."


def option_controls() -> dict[str, gr.components.Component]:
    """One control per job option (client/options.py): its default, bounds and help."""
    controls = {}
    for d in job_options():
        label, elem_id = f"{d.name.replace('_', ' ')}: {d.spec.help}", f"opt-{d.name}"
        if d.type is bool:
            controls[d.name] = gr.Checkbox(value=d.default, label=label, elem_id=elem_id)
        elif d.type in (int, float):
            low = d.spec.ge if d.spec.ge is not None else d.spec.gt
            if d.type is int and low is not None and d.spec.le is not None:
                controls[d.name] = gr.Slider(low, d.spec.le, value=d.default, step=1, label=label, elem_id=elem_id)
            else:
                controls[d.name] = gr.Number(value=d.default, minimum=low, maximum=d.spec.le, label=label, elem_id=elem_id)
        else:  # quads ("0 10 0 0") and text
            text = " ".join(map(str, d.default)) if isinstance(d.default, tuple) else (d.default or "")
            controls[d.name] = gr.Textbox(value=text, label=label, elem_id=elem_id)
    return controls


def option_form(controls: dict[str, gr.components.Component], values: dict) -> dict[str, str]:
    """The controls' values as the API's form fields (the API validates them)."""
    form = {}
    for name, component in controls.items():
        value = values[component]
        if isinstance(value, bool):
            form[name] = str(value).lower()
        elif isinstance(value, float) and value.is_integer() and isinstance(component, gr.Slider):
            form[name] = str(int(value))
        elif value not in (None, ""):
            form[name] = str(value)
    return form


class SignIns:
    """Gradio's sign-in: the user name is the tenant, the password its API key. The keys of signed-in
    tenants stay in this process's memory (the session cookie names only the tenant)."""

    def __init__(self, tenants: Tenants):
        self.tenants = tenants
        self._keys: dict[str, str] = {}

    def check(self, username: str, password: str) -> bool:
        tenant = self.tenants.tenant_for(password)
        if tenant is None or tenant != username.strip():
            return False
        self._keys[tenant] = password
        return True

    def key(self, request: gr.Request | None) -> str:
        if self.tenants.local_only:
            return ""
        username = getattr(request, "username", None)
        if not username or username not in self._keys:
            raise gr.Error("Your session has ended: reload the page and sign in again.")
        return self._keys[username]


def build_ui(base: str, signins: SignIns) -> gr.Blocks:
    with gr.Blocks(title="lipsync-triton", delete_cache=(int(KEEP_S), int(KEEP_S))) as ui:
        gr.Markdown("# lipsync-triton\nA presenter video or photo + a speech track -> a lip-synced video.")
        status = gr.Markdown(_model_status(base), elem_id="model-status")
        gr.Timer(3.0).tick(lambda: _model_status(base), outputs=status)

        with gr.Accordion("Options (every job of this page)", open=False):
            controls = option_controls()

        with gr.Tab("Single video"):
            with gr.Row():
                face = gr.File(label="Presenter video or photo", elem_id="face-file")
                audio = gr.File(label="Speech", elem_id="audio-file")
            with gr.Accordion("Options", open=False):
                pads = gr.Textbox(label="Pads (top bottom left right)", value="0 10 0 0")
                detect_every = gr.Slider(1, 5, value=2, step=1, label="Detect faces on every K-th frame")
                hard_paste = gr.Checkbox(label="Paste the whole face box (no blending)")
            submit = gr.Button("Generate", variant="primary", elem_id="submit")
            progress = gr.Markdown(elem_id="job-progress")
            video = gr.Video(label="Result", elem_id="result-video", interactive=False)
            download = gr.File(label="Download", elem_id="result-file")

            def run_single(values: dict, request: gr.Request):
                face_file, audio_file = values[face], values[audio]
                if not face_file or not audio_file:
                    raise gr.Error("Upload a presenter video or photo and a speech track.")
                api = ApiClient(base, signins.key(request))
                with open(face_file, "rb") as f, open(audio_file, "rb") as a:
                    job = api.call("POST", "/v1/jobs", files={"face": (Path(face_file).name, f), "audio": (Path(audio_file).name, a)},
                                   data=option_form(controls, values)).json()
                while True:
                    view = api.call("GET", f"/v1/jobs/{job['id']}").json()
                    line = f"Job `{view['id']}`: **{view['status']}** {view['progress'] * 100:.0f}%"
                    if view["status"] in FINAL:
                        break
                    yield line, None, None
                    time.sleep(POLL_S)
                if view["status"] != JobStatus.SUCCEEDED:
                    yield f"{line}: {view.get('error') or ''}", None, None
                    return
                path = api.download(view["links"]["result"], ".mp4")
                yield line, path, path

            submit.click(run_single, {face, audio, *controls.values()}, [progress, video, download])

        with gr.Tab("Batch"):
            batch_audio = gr.File(label="One speech for every presenter", elem_id="batch-audio")
            batch_faces = gr.File(label="Presenter videos or photos", file_count="multiple", elem_id="batch-faces")
            batch_submit = gr.Button("Generate all", variant="primary", elem_id="batch-submit")
            table = gr.Dataframe(headers=["item", "name", "status", "progress", "error"], label="Items", elem_id="batch-table")
            thumbs = gr.Gallery(label="Thumbnails", columns=6, height=200)
            archive = gr.File(label="All results (ZIP)", elem_id="batch-zip")

            def run_batch(values: dict, request: gr.Request):
                audio_file, face_files = values[batch_audio], values[batch_faces]
                if not audio_file or not face_files:
                    raise gr.Error("Upload one speech track and at least one presenter.")
                api = ApiClient(base, signins.key(request))
                handles = [open(f, "rb") for f in face_files]
                try:
                    with open(audio_file, "rb") as a:
                        files = [("faces", (Path(f).name, h)) for f, h in zip(face_files, handles)]
                        batch = api.call("POST", "/v1/batches", files=files + [("audio", (Path(audio_file).name, a))],
                                         data={"options": json.dumps(option_form(controls, values))}).json()
                finally:
                    for h in handles:
                        h.close()
                thumbnails: dict[str, str] = {}
                while True:
                    view = api.call("GET", f"/v1/batches/{batch['id']}").json()
                    rows = [[j["item"], j["name"], j["status"], f"{j['progress'] * 100:.0f}%", j.get("error") or ""] for j in view["jobs"]]
                    for j in view["jobs"]:
                        if j["status"] == JobStatus.SUCCEEDED and j["id"] not in thumbnails:
                            thumbnails[j["id"]] = api.download(j["links"]["thumbnail"], ".jpg")
                    gallery = list(thumbnails.values())
                    if view["done"]:
                        break
                    yield rows, gallery, None
                    time.sleep(POLL_S)
                zip_path = api.download(view["links"]["archive"], ".zip") if thumbnails else None
                yield rows, gallery, zip_path

            batch_submit.click(run_batch, {batch_audio, batch_faces, *controls.values()}, [table, thumbs, archive])
    return ui


def mount_ui(app: FastAPI, api_base: str, tenants: Tenants, max_upload_bytes: int) -> FastAPI:
    signins = SignIns(tenants)
    return gr.mount_gradio_app(app, build_ui(api_base, signins), path="/ui", max_file_size=max_upload_bytes,
                               auth=None if tenants.local_only else signins.check,
                               auth_message="Sign in with your tenant name and the API key your administrator gave you.")
