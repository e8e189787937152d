"""The web UI (Gradio, mounted at /ui): a single job and a batch, through the REST API itself, so it
has exactly the API's checks, limits and tenancy.

Everything under /ui, Gradio's upload endpoint included, needs a sign-in with the tenant's name and
API key (except in local-only mode): the key is kept in this process for the session and sent to
the API on the user's behalf. Uploads obey the API's size limit and are deleted after an hour; each
is recorded with the user who sent it, and a function acts only on its caller's uploads (ui_guard.py:
a path of the server's, another user's upload or a URL handed to a function is refused)."""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import httpx
from fastapi import FastAPI

from lipsync_triton import log
from lipsync_triton.client.options import job_options

from .auth_throttle import AuthThrottle
from .db import FINAL, JobStatus
from .tenants import Tenants
from .ui_guard import LOCAL_USER, UI_PREFIX, NotYourUpload, UiGuard, UploadOwners

POLL_S = 1.0
DOWNLOADS = Path(tempfile.gettempdir()) / "lipsync-ui"
KEEP_S = 3600.0  # Gradio copies what it shows into its own cache (also pruned hourly)


class ApiError(Exception):
    """An API answer >= 400, as one line for the page (shown where the job is, not as a pop-up),
    in words instead of a status code."""


_STATUS_WORDS = {401: "Not signed in", 403: "Not allowed", 404: "Not found", 409: "Not yet", 410: "Gone",
                 413: "Too large", 422: "Not accepted", 429: "Too much at once", 503: "The service is not ready"}


def api_error_text(status: int, detail: str) -> str:
    words = _STATUS_WORDS.get(status, "The service could not do this" if status >= 500 else "Refused")
    return f"{words}: {detail}" if detail else words


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
            raise ApiError(api_error_text(response.status_code, str(detail or "")))
        return response

    def download(self, path: str, filename: str) -> str:
        """The file under `filename` (what the browser saves it as) in a folder of its own."""
        _prune_downloads()
        folder = Path(tempfile.mkdtemp(prefix="result-", dir=DOWNLOADS))
        out = folder / filename
        with open(out, "wb") as handle, self.http.stream("GET", path) as response:
            response.raise_for_status()
            for chunk in response.iter_bytes(1 << 20):
                handle.write(chunk)
        return str(out)


def _prune_downloads() -> None:
    """Downloads older than KEEP_S go (each lives in a folder of its own)."""
    DOWNLOADS.mkdir(exist_ok=True)
    cutoff = time.time() - KEEP_S
    for old in DOWNLOADS.iterdir():
        if old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def result_name(upload: str | None, suffix: str = ".mp4") -> str:
    """`<presenter>-lipsync.mp4`: the download is named after the user's input."""
    stem = re.sub(r"[^\w.-]+", "_", Path(upload or "presenter").stem).strip("._") or "presenter"
    return f"{stem[:80]}-lipsync{suffix}"


def _model_status(base: str) -> str:
    try:
        answer = httpx.get(f"{base}/readyz", timeout=10)
        ready = answer.json()
    except httpx.ConnectError:
        return "Service starting..."
    except (httpx.HTTPError, ValueError):
        return "Status unavailable right now (the service is busy); jobs still run."
    checks = ready.get("checks", {})
    random_note = ("\n\n**Note: this service serves RANDOM Wav2Lip weights**: the mouth will be a blur. "
                   "Ask the operator to set LIPSYNC_CHECKPOINT." if ready.get("weights") == "random" else "")
    if not checks.get("triton", {}).get("ok"):
        return "Model initialising: jobs wait in the queue until the models are ready." + random_note
    problems = [name for name, c in checks.items() if not c.get("ok")]
    return ("Not ready: " + ", ".join(problems) if problems else "Ready.") + random_note


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
    tenants stay in this process's memory (the session cookie names only the tenant). Uploads are
    checked against their owners: a function acts only on files its caller uploaded."""

    def __init__(self, tenants: Tenants, owners: UploadOwners):
        self.tenants, self.owners = tenants, owners
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

    def user(self, request: gr.Request | None) -> str:
        return LOCAL_USER if self.tenants.local_only else (getattr(request, "username", None) or "\0nobody")

    def uploaded(self, path: str | None, request: gr.Request | None) -> str | None:
        """`path` if the caller uploaded it here, else an error in place (never a server file, a URL or
        another user's upload)."""
        try:
            return self.owners.check(path, self.user(request))
        except NotYourUpload as exc:
            raise gr.Error(str(exc)) from None


def _job_line(view: dict) -> str:
    line = f"Job `{view['id'][:8]}`: **{view['status']}** {view['progress'] * 100:.0f}%"
    if view.get("warning"):
        line = f"{line}. Note: {view['warning']}"
    return f"{line}: {view['error']}" if view.get("error") else line


def recent_jobs(api: ApiClient, limit: int = 20) -> list[list]:
    """The tenant's newest jobs (kept by the service: a reload shows them again): each row's full id,
    then what the table shows."""
    jobs = api.call("GET", "/v1/jobs", params={"limit": limit}).json()["jobs"]
    return [[j["id"], j["id"][:8], j["name"], j["status"], f"{j['progress'] * 100:.0f}%",
             (j["created_at"] or "")[:19].replace("T", " "), j.get("error") or ""] for j in jobs]


def _preview(path: str | None):
    """What the browser can show of an upload (checked to be the caller's): a video player or the photo."""
    if not path:
        return gr.update(value=None, visible=False), gr.update(value=None, visible=False)
    is_image = Path(path).suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
    return gr.update(value=None if is_image else path, visible=not is_image), gr.update(value=path if is_image else None, visible=is_image)


def signed_in_line(signins: SignIns, request: gr.Request) -> str:
    """Who is signed in, how to sign out, and the way to live mode."""
    live = "[Live mode](/live)"
    if signins.tenants.local_only:
        return f"Local service (no sign-in) · {live}"
    return f"Signed in as **{signins.user(request)}** · [Sign out]({UI_PREFIX}/logout) · {live}"


def build_ui(base: str, signins: SignIns) -> gr.Blocks:
    """The page. Every function that takes a file passes it through `signins.uploaded` first."""
    with gr.Blocks(title="lipsync-triton", delete_cache=(int(KEEP_S), int(KEEP_S))) as ui:
        gr.Markdown("# lipsync-triton\nA presenter video or photo + a speech track -> a lip-synced video.")
        account = gr.Markdown(elem_id="signed-in")

        def who(request: gr.Request) -> str:
            return signed_in_line(signins, request)

        ui.load(who, None, account)
        status = gr.Markdown(_model_status(base), elem_id="model-status")
        gr.Timer(3.0).tick(lambda: _model_status(base), outputs=status)

        with gr.Accordion("Options (every job of this page)", open=False):
            controls = option_controls()

        with gr.Tab("Single video"):
            with gr.Row():
                with gr.Column():
                    face = gr.File(label="Presenter video or photo", elem_id="face-file")
                    presenter = gr.Dropdown(label="... or one of your registered presenters (POST /v1/presenters)", choices=[],
                                            value=None, elem_id="presenter-pick", interactive=True)
                    face_video = gr.Video(label="Presenter", visible=False, interactive=False, elem_id="face-preview")
                    face_photo = gr.Image(label="Presenter", visible=False, interactive=False, type="filepath")
                with gr.Column():
                    audio = gr.File(label="Speech", elem_id="audio-file")
                    speech = gr.Audio(label="Speech", visible=False, interactive=False, type="filepath", elem_id="audio-preview")
            def preview_face(path: str | None, request: gr.Request):
                return _preview(signins.uploaded(path, request))

            def preview_speech(path: str | None, request: gr.Request):
                path = signins.uploaded(path, request)
                return gr.update(value=path, visible=bool(path))

            face.change(preview_face, face, [face_video, face_photo])
            audio.change(preview_speech, audio, speech)
            with gr.Row():
                submit = gr.Button("Generate", variant="primary", elem_id="submit")
                cancel = gr.Button("Cancel", elem_id="cancel")
            job_id = gr.State(None)
            progress = gr.Markdown(elem_id="job-progress")
            video = gr.Video(label="Result", elem_id="result-video", interactive=False, height=400)  # Download stays in view
            download = gr.File(label="Download", elem_id="result-file")

            def run_single(values: dict, request: gr.Request):
                face_file, audio_file, presenter_id = values[face], values[audio], values[presenter]
                if not (face_file or presenter_id) or not audio_file:
                    yield "Upload a presenter video or photo (or pick a registered presenter) and a speech track.", None, None, None
                    return
                face_file, audio_file = signins.uploaded(face_file, request), signins.uploaded(audio_file, request)
                api = ApiClient(base, signins.key(request))
                try:
                    with open(audio_file, "rb") as a:
                        if face_file:  # an upload wins over the picker
                            with open(face_file, "rb") as f:
                                files = {"face": (Path(face_file).name, f), "audio": (Path(audio_file).name, a)}
                                job = api.call("POST", "/v1/jobs", files=files, data=option_form(controls, values)).json()
                        else:
                            job = api.call("POST", "/v1/jobs", files={"audio": (Path(audio_file).name, a)},
                                           data={**option_form(controls, values), "presenter_id": presenter_id}).json()
                    face_file = face_file or job.get("name") or "presenter"
                    while True:
                        view = api.call("GET", f"/v1/jobs/{job['id']}").json()
                        if view["status"] in FINAL:
                            break
                        yield _job_line(view), None, None, job["id"]
                        time.sleep(POLL_S)
                    if view["status"] != JobStatus.SUCCEEDED:
                        yield _job_line(view), None, None, None
                        return
                    path = api.download(view["links"]["result"], result_name(face_file))
                    yield _job_line(view), path, path, None
                except ApiError as exc:  # shown in place of the job's line, not as a pop-up
                    yield f"Not submitted or stopped: {exc}", None, None, None

            def cancel_single(current: str | None, request: gr.Request):
                if not current:
                    return "No job running."
                try:
                    view = ApiClient(base, signins.key(request)).call("POST", f"/v1/jobs/{current}/cancel").json()
                except ApiError as exc:
                    return f"Could not cancel: {exc}"
                return _job_line(view)

            run_events = [submit.click(run_single, {face, audio, presenter, *controls.values()}, [progress, video, download, job_id])]

            def presenters(request: gr.Request):
                """The tenant's ready presenters, by name (refreshed when the page loads)."""
                try:
                    found = ApiClient(base, signins.key(request)).call("GET", "/v1/presenters").json()["presenters"]
                except (ApiError, gr.Error, httpx.HTTPError):
                    return gr.update()
                return gr.update(choices=[(f"{p['name'] or p['id'][:8]} ({p['id'][:8]})", p["id"]) for p in found
                                          if p["status"] == "ready"])

            ui.load(presenters, None, presenter)
            cancel.click(cancel_single, job_id, progress)

        with gr.Tab("Batch"):
            batch_audio = gr.File(label="One speech for every presenter", elem_id="batch-audio")
            batch_faces = gr.File(label="Presenter videos or photos", file_count="multiple", elem_id="batch-faces")
            batch_submit = gr.Button("Generate all", variant="primary", elem_id="batch-submit")
            batch_note = gr.Markdown(elem_id="batch-note")
            table = gr.Dataframe(headers=["item", "name", "status", "progress", "error"], label="Items", elem_id="batch-table")
            thumbs = gr.Gallery(label="Thumbnails", columns=4, object_fit="contain", height="auto", elem_id="batch-thumbs")
            archive = gr.File(label="All results (ZIP)", elem_id="batch-zip")

            def run_batch(values: dict, request: gr.Request):
                audio_file, face_files = values[batch_audio], values[batch_faces]
                if not audio_file or not face_files:
                    yield "Upload one speech track and at least one presenter.", None, None, None
                    return
                audio_file = signins.uploaded(audio_file, request)
                face_files = [signins.uploaded(f, request) for f in face_files]
                api = ApiClient(base, signins.key(request))
                handles = [open(f, "rb") for f in face_files]
                try:
                    with open(audio_file, "rb") as a:
                        files = [("faces", (Path(f).name, h)) for f, h in zip(face_files, handles)]
                        batch = api.call("POST", "/v1/batches", files=files + [("audio", (Path(audio_file).name, a))],
                                         data={"options": json.dumps(option_form(controls, values))}).json()
                    thumbnails: dict[str, tuple[str, str]] = {}
                    while True:
                        view = api.call("GET", f"/v1/batches/{batch['id']}").json()
                        rows = [[j["item"], j["name"], j["status"], f"{j['progress'] * 100:.0f}%", j.get("error") or ""]
                                for j in view["jobs"]]
                        for j in view["jobs"]:
                            if j["status"] == JobStatus.SUCCEEDED and j["id"] not in thumbnails:
                                thumbnails[j["id"]] = (api.download(j["links"]["thumbnail"], result_name(j["name"], ".jpg")), j["name"])
                        gallery = list(thumbnails.values())  # (image, caption): whole and labelled
                        if view["done"]:
                            break
                        yield f"Batch `{batch['id'][:8]}`: running", rows, gallery, None
                        time.sleep(POLL_S)
                    zip_path = api.download(view["links"]["archive"], "lipsync-batch.zip") if thumbnails else None
                    yield f"Batch `{batch['id'][:8]}`: done", rows, gallery, zip_path
                except ApiError as exc:
                    yield f"Not submitted or stopped: {exc}", None, None, None
                finally:
                    for h in handles:
                        h.close()

            run_events.append(batch_submit.click(run_batch, {batch_audio, batch_faces, *controls.values()},
                                                 [batch_note, table, thumbs, archive]))

        with gr.Tab("Your recent jobs") as recent_tab:
            history = gr.Dataframe(headers=["job", "name", "status", "progress", "created (UTC)", "error"], label="Newest first: "
                                   "select a finished job's row to watch and download its result",
                                   elem_id="recent-jobs", interactive=False)
            shown_ids = gr.State([])
            picked_note = gr.Markdown(elem_id="recent-note")
            picked_video = gr.Video(label="Result", elem_id="recent-video", interactive=False, height=360)
            picked_file = gr.File(label="Download", elem_id="recent-file")

            def refresh(request: gr.Request):
                try:
                    jobs = recent_jobs(ApiClient(base, signins.key(request)))
                except (ApiError, gr.Error, httpx.HTTPError):
                    return gr.update(), gr.update()
                return [row[1:] for row in jobs], [row[0] for row in jobs]

            def open_result(ids: list[str], request: gr.Request, selected: gr.SelectData):
                """A row of the table: its job's result, fetched through the API with the caller's key."""
                row = selected.index[0] if isinstance(selected.index, (list, tuple)) else selected.index
                if not ids or row is None or row >= len(ids):
                    return "", None, None
                api = ApiClient(base, signins.key(request))
                try:
                    view = api.call("GET", f"/v1/jobs/{ids[row]}").json()
                    if view["status"] != JobStatus.SUCCEEDED:
                        return _job_line(view), None, None
                    path = api.download(view["links"]["result"], result_name(view["name"] or view["id"]))
                except (ApiError, httpx.HTTPError) as exc:
                    return str(exc), None, None
                return _job_line(view), path, path

            # Refreshed when the page loads, every 5 s, when the tab is opened, and when a run ends.
            for trigger in (ui.load, gr.Timer(5.0).tick, recent_tab.select):
                trigger(refresh, None, [history, shown_ids])
            history.select(open_result, shown_ids, [picked_note, picked_video, picked_file])
            for run in run_events:
                run.then(refresh, None, [history, shown_ids])
    # Gradio runs one call per event at a time by default: a second user's Generate would wait for
    # the first job to finish. Every handler here only submits and polls the API, so none is limited.
    ui.queue(default_concurrency_limit=None)
    _poll_queue_calmly(ui)
    return ui


QUEUE_IDLE_POLL_S = 0.02


def _poll_queue_calmly(ui: gr.Blocks) -> None:
    """Gradio's queue polls for work every 1 ms while idle (and for progress every 10 ms): about 8%
    of a core, and 1000 wake-ups a second of the event loop that also serves the REST API (measured
    with strace on an idle `lipsync api`). A click here waits for an HTTP call anyway; 20 ms more
    before it starts is not seen. Gradio has no setting for it, so its queue's attributes are set."""
    queue = ui._queue
    if not hasattr(queue, "sleep_when_free"):  # a Gradio that no longer polls this way
        log.event("ui_queue_poll_unchanged", reason="gradio's queue has no sleep_when_free")
        return
    queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_IDLE_POLL_S)
    queue.progress_update_sleep_when_free = max(getattr(queue, "progress_update_sleep_when_free", 0.0), 0.1)


def mount_ui(app: FastAPI, api_base: str, tenants: Tenants, max_upload_bytes: int, throttle: AuthThrottle,
             favicon: Path | None = None) -> FastAPI:
    owners = UploadOwners(KEEP_S)
    signins = SignIns(tenants, owners)
    ui = build_ui(api_base, signins)
    app = gr.mount_gradio_app(app, ui, path=UI_PREFIX, max_file_size=max_upload_bytes,
                              auth=None if tenants.local_only else signins.check,
                              auth_message="Sign in with your tenant name and the API key your administrator gave you.")
    # Mounted, the Blocks count as never launched, and Gradio then skips its check that a file handed
    # to a function was uploaded (any server path passed). Mark them launched, as `launch()` would.
    ui.has_launched = ui.is_running = True
    gradio_app = next(r.app for r in app.routes if getattr(r, "path", None) == UI_PREFIX)

    def current_user(request) -> str | None:
        if tenants.local_only:
            return LOCAL_USER
        cookies = request.cookies
        token = cookies.get(f"access-token-{gradio_app.cookie_id}") or cookies.get(f"access-token-unsecure-{gradio_app.cookie_id}")
        return gradio_app.tokens.get(token)

    app.add_middleware(UiGuard, owners=owners, throttle=throttle, current_user=current_user)
    return app
