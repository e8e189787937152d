"""Every declared option (client/options.py) reaches every interface with the same name, default and
bounds: the CLI, the job service's model, the REST form (OpenAPI), the web UI and the checks. Nothing
here lists an option by hand: a new option is tested by being declared."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lipsync_triton.cli import build_parser, options_from_args
from lipsync_triton.client.options import GenerateOptions, Quad, declared, job_options, validate
from lipsync_triton.errors import LipsyncError
from lipsync_triton.service.job_options import JobOptions


def _quad(d) -> bool:
    return d.type in (Quad, Quad | None)


def _out_of_bounds(d) -> list:
    make = (lambda v: (0, int(v), 0, 0)) if _quad(d) else d.type  # a quad's bounds hold for each value
    values = []
    if d.spec.ge is not None:
        values.append(make(d.spec.ge - 1))
    if d.spec.gt is not None:
        values.append(make(d.spec.gt))
    if d.spec.le is not None:
        values.append(make(d.spec.le + 1))
    if d.spec.max_length is not None:
        values.append("x" * (d.spec.max_length + 1))
    return values


def test_the_cli_offers_every_option_with_its_default():
    args = build_parser().parse_args(["generate", "--face", "f.mp4", "--audio", "s.wav"])
    assert options_from_args(args) == {d.name: d.default for d in declared()}
    assert GenerateOptions(**options_from_args(args)) == GenerateOptions()


def test_the_cli_passes_each_flag_through():
    argv = ["generate", "--face", "f.mp4", "--audio", "s.wav", "--pads", "1", "2", "3", "4", "--box", "0", "10", "0", "10",
            "--hard-paste", "--no-cache", "--keyframe-every", "0", "--fps", "30"]
    opts = GenerateOptions(**options_from_args(build_parser().parse_args(argv)))
    assert (opts.pads, opts.box, opts.hard_paste, opts.use_cache, opts.keyframe_every, opts.fps) == (
        (1, 2, 3, 4), (0, 10, 0, 10), True, False, 0, 30.0)


def test_the_service_model_has_every_job_option_with_the_same_default_and_bounds():
    schema = JobOptions.model_json_schema()["properties"]
    assert set(schema) == {d.name for d in job_options()}
    for d in job_options():
        assert JobOptions.model_fields[d.name].default == d.default, d.name
        for bound, key in ((d.spec.ge, "minimum"), (d.spec.gt, "exclusiveMinimum"), (d.spec.le, "maximum"),
                           (d.spec.max_length, "maxLength")):
            if bound is not None and not _quad(d):  # a quad's: checked per value (next test)
                assert schema[d.name].get(key) == bound, (d.name, key, schema[d.name])


@pytest.mark.parametrize("d", declared(), ids=lambda d: d.name)
def test_out_of_bounds_values_are_refused_the_same_way_everywhere(d):
    for value in _out_of_bounds(d):
        with pytest.raises(LipsyncError, match=f"option {d.name}"):
            validate(GenerateOptions(**{d.name: value}))
        if d.spec.job:
            with pytest.raises(LipsyncError, match=f"option {d.name}: "):
                JobOptions.parse({d.name: " ".join(map(str, value)) if _quad(d) else str(value)})


def test_the_rest_form_and_the_web_ui_offer_every_job_option(tmp_path):
    from lipsync_triton.service.api import create_app
    from lipsync_triton.service.settings import Settings
    from lipsync_triton.service.tenants import Tenants
    from lipsync_triton.service.ui import KEEP_S, SignIns, UploadOwners, build_ui

    settings = Settings(data_dir=tmp_path, api_keys="acme:key-acme-for-tests")
    client = TestClient(create_app(settings))
    spec = client.get("/openapi.json").json()
    fields = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    for d in job_options():
        assert d.name in fields and fields[d.name].get("description") == d.spec.help, d.name
    too_big = {d.name: " ".join(map(str, v)) if _quad(d) else str(v)
               for d in job_options() if (v := next(iter(_out_of_bounds(d)), None)) is not None}
    for name, value in too_big.items():
        answer = client.post("/v1/jobs", headers={"Authorization": "Bearer key-acme-for-tests"}, data={name: value})
        assert answer.status_code == 422 and answer.json()["detail"].startswith(f"option {name}"), (name, answer.text)

    ui = build_ui("http://127.0.0.1:9", SignIns(Tenants(settings), UploadOwners(KEEP_S)))
    controls = {block.elem_id: block for block in ui.blocks.values() if getattr(block, "elem_id", None)}
    for d in job_options():
        control = controls[f"opt-{d.name}"]
        shown = control.value
        expected = " ".join(map(str, d.default)) if isinstance(d.default, tuple) else d.default
        assert shown == (expected if expected is not None else ""), (d.name, shown)
        if d.spec.le is not None and not _quad(d):  # a quad is a text box; its values are checked on submit
            assert control.maximum == d.spec.le, d.name


def test_pads_are_bounded_by_the_face_box_they_pad():
    """--pads 0 99999 0 0 painted the mouth over the chest, 0 -99999 0 0 replaced nothing: refused up
    front beyond +-1000 px, and at run time beyond minus half to plus the face box's own size."""
    import numpy as np

    from lipsync_triton.preprocessing.faces import pad_and_clip

    for pads in ((0, 99999, 0, 0), (0, -99999, 0, 0)):
        with pytest.raises(LipsyncError, match=r"^option pads: each value must be [<>]= -?1000, got -?99999$"):
            validate(GenerateOptions(pads=pads))
    face = np.array([[100.0, 50.0, 180.0, 150.0]])  # 80 px wide, 100 px high
    assert pad_and_clip(face, (0, 100, -40, 80), 640, 360).tolist() == [[140, 50, 260, 250]]
    for pads, words in (((0, 101, 0, 0), "101 px below the face .* height is 100 px\): use -50 to 100"),
                        ((-51, 0, 0, 0), "-51 px above the face"), ((0, 0, 0, 81), "81 px right of the face .* width is 80")):
        with pytest.raises(LipsyncError, match=f"^option pads: {words}"):
            pad_and_clip(face, pads, 640, 360)
