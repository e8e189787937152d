"""Loading users' checkpoints: the official format loads strictly; everything else fails clearly."""
import json
import pickle

import pytest
import torch

from lipsync_triton.errors import LipsyncError
from lipsync_triton.export.checkpoint import load_wav2lip, random_state_dict, save_checkpoint


def test_official_format_with_module_prefix_and_extra_keys_loads(tmp_path):
    state = random_state_dict(3)
    path = tmp_path / "wav2lip_gan.pth"
    save_checkpoint(state, path, data_parallel=True)
    blob = torch.load(path, weights_only=True)
    assert all(k.startswith("module.") for k in blob["state_dict"])
    assert "global_step" in blob
    model = load_wav2lip(path)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_checkpoint_has_the_published_layout():
    state = random_state_dict(0)
    assert len(state) == 352
    params = sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert abs(params / 1e6 - 36.3) < 0.05


def test_random_weights_are_deterministic():
    a, b, c = random_state_dict(1), random_state_dict(1), random_state_dict(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["output_block.1.weight"], c["output_block.1.weight"])


def test_missing_file(tmp_path):
    with pytest.raises(LipsyncError, match="checkpoint not found"):
        load_wav2lip(tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is text, not a checkpoint")
    with pytest.raises(LipsyncError, match="not a loadable PyTorch checkpoint"):
        load_wav2lip(path)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_hostile_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil()}, path, pickle_module=pickle)
    with pytest.raises(LipsyncError, match="not a loadable PyTorch checkpoint"):
        load_wav2lip(path)


def test_wrong_architecture_names_keys_and_shapes(tmp_path):
    state = random_state_dict(0)
    del state["output_block.1.bias"]
    state["audio_encoder.0.conv_block.0.weight"] = torch.zeros(32, 1, 5, 5)
    state["extra.layer.weight"] = torch.zeros(1)
    path = tmp_path / "other.pth"
    save_checkpoint(state, path)
    with pytest.raises(LipsyncError) as err:
        load_wav2lip(path)
    text = str(err.value)
    assert "output_block.1.bias" in text and "extra.layer.weight" in text
    assert "audio_encoder.0.conv_block.0.weight (32, 1, 5, 5) != (32, 1, 3, 3)" in text


def test_the_service_serves_the_checkpoint_it_is_told_or_refuses_to_start(exported_repo, tmp_path):
    """A missing LIPSYNC_CHECKPOINT is an error (not a silent start on the old random weights); a
    different checkpoint re-exports; the served config says which weights it carries."""
    import shutil

    from lipsync_triton.files import file_sha256
    from lipsync_triton.service.processes import _export_if_missing

    repo = tmp_path / "model_repository"
    shutil.copytree(exported_repo, repo)  # a random-weight export, as `make service` leaves it
    assert 'key: "weights" value { string_value: "random" }' in (repo / "wav2lip" / "config.pbtxt").read_text()
    with pytest.raises(LipsyncError, match="LIPSYNC_CHECKPOINT=.* is not a file"):
        _export_if_missing(repo, str(tmp_path / "nonexistent.pth"))
    checkpoint = tmp_path / "wav2lip_gan.pth"
    save_checkpoint(random_state_dict(seed=3), checkpoint)
    _export_if_missing(repo, str(checkpoint))  # other weights than the exported ones: exported again
    digest = file_sha256(checkpoint)
    assert json.loads((repo / "export.json").read_text())["checkpoint_sha256"] == digest
    config = (repo / "wav2lip" / "config.pbtxt").read_text()
    assert f'key: "weights" value {{ string_value: "checkpoint sha256:{digest[:16]}" }}' in config
    before = (repo / "wav2lip" / "config.pbtxt").stat().st_mtime_ns
    _export_if_missing(repo, str(checkpoint))  # the same checkpoint: kept
    _export_if_missing(repo, "")  # none named: what is exported is served
    assert (repo / "wav2lip" / "config.pbtxt").stat().st_mtime_ns == before
