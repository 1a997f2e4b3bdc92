"""Bad weights files: each one is refused with a one-line CheckpointError naming the file and the cause."""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from vaecli.errors import CheckpointError
from vaecli.model import AutoencoderKL
from vaecli.weights.checkpoints import config_from_weights, load_weights


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _assert_same_weights(loaded, original) -> None:
    got, want = loaded.state_dict(), original.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


def _refused(config, path, match: str, **kwargs) -> str:
    with pytest.raises(CheckpointError, match=match) as err:
        load_weights(config, path, **kwargs)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    return message


def test_saved_file_round_trips(tiny_config, tiny_model, tiny_weights):
    assert config_from_weights(tiny_weights) == tiny_config
    _assert_same_weights(load_weights(tiny_config, tiny_weights), tiny_model)


def test_renamed_key(tmp_path, tiny_config, tiny_model):
    state = _state(tiny_model)
    state["encoder.conv_in.weights"] = state.pop("encoder.conv_in.weight")
    path = tmp_path / "renamed.safetensors"
    save_file(state, str(path))
    message = _refused(tiny_config, path, "does not match")
    assert "missing keys: encoder.conv_in.weight (1)" in message
    assert "unexpected keys: encoder.conv_in.weights (1)" in message


def test_many_missing_keys_are_listed_with_a_count(tmp_path, tiny_config, tiny_model):
    state = _state(tiny_model)
    decoder = sorted(k for k in state if k.startswith("decoder."))
    for k in decoder:
        del state[k]
    path = tmp_path / "encoder-only.safetensors"
    save_file(state, str(path))
    message = _refused(tiny_config, path, "missing keys")
    assert ", ".join(decoder[:5]) in message
    assert decoder[5] not in message
    assert f"({len(decoder)} in all)" in message
    assert "unexpected" not in message


def test_wrong_shapes(tiny_config, tiny_weights):
    wider = tiny_config.replace(ch=64, name="wider")
    message = _refused(wider, tiny_weights, "mis-shaped")
    assert "does not match wider" in message
    assert "decoder.conv_in.bias [64] != [128]" in message
    with torch.device("meta"):
        narrow_shapes = {k: v.shape for k, v in AutoencoderKL(tiny_config).state_dict().items()}
        wide_shapes = {k: v.shape for k, v in AutoencoderKL(wider).state_dict().items()}
    differing = sum(narrow_shapes[k] != wide_shapes[k] for k in wide_shapes)
    assert f"({differing} in all)" in message


def test_truncated_safetensors(tmp_path, tiny_config, tiny_weights):
    data = tiny_weights.read_bytes()
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(data[: len(data) // 2])
    _refused(tiny_config, path, "truncated|unreadable")


def test_header_cut_short(tmp_path, tiny_config, tiny_weights):
    path = tmp_path / "stub.safetensors"
    path.write_bytes(tiny_weights.read_bytes()[:100])
    _refused(tiny_config, path, "truncated")


def test_pickle_refused_without_allow_pickle(tmp_path, tiny_config, tiny_model):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": _state(tiny_model)}, path)
    _refused(tiny_config, path, "--allow-pickle")


def test_pickle_loads_when_allowed(tmp_path, tiny_config, tiny_model):
    # The shape of a latent-diffusion checkpoint: prefixed VAE keys beside the loss's and EMA's.
    state = {f"first_stage_model.{k}": v for k, v in _state(tiny_model).items()}
    state["loss.logvar"] = torch.zeros(())
    state["model_ema.decay"] = torch.tensor(0.9999)
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": state, "global_step": 5}, path)
    _assert_same_weights(load_weights(tiny_config, path, allow_pickle=True), tiny_model)


class _Payload:
    """Unpickling this would call os.system: weights_only loading must refuse it."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused_even_when_allowed(tmp_path, tiny_config):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"x": _Payload()}}, f)
    _refused(tiny_config, path, "weights_only=True", allow_pickle=True)


def test_pickle_without_tensors(tmp_path, tiny_config):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    _refused(tiny_config, path, "no state dict of tensors", allow_pickle=True)


def test_safetensors_name_holding_a_pickle(tmp_path, tiny_config, tiny_model):
    path = tmp_path / "actually-pickle.safetensors"
    torch.save(_state(tiny_model), path)
    _refused(tiny_config, path, "pickle.*--allow-pickle")


def test_empty_file(tmp_path, tiny_config):
    for name in ("empty.safetensors", "empty.ckpt"):
        path = tmp_path / name
        path.write_bytes(b"")
        _refused(tiny_config, path, "empty file", allow_pickle=True)


def test_text_file(tmp_path, tiny_config):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not weights, just a note someone saved with the wrong name\n")
    _refused(tiny_config, path, "not a safetensors file")


def test_missing_file(tmp_path, tiny_config):
    _refused(tiny_config, tmp_path / "absent.safetensors", "not found")


def test_integer_tensor_is_refused(tmp_path, tiny_config, tiny_model):
    state = _state(tiny_model)
    state["encoder.conv_in.bias"] = state["encoder.conv_in.bias"].to(torch.int32)
    path = tmp_path / "int.safetensors"
    save_file(state, str(path))
    _refused(tiny_config, path, "non-float dtype")


@pytest.mark.parametrize("prefix", ["first_stage_model.", "vae."])
def test_prefixes_are_stripped_and_extras_dropped(tmp_path, tiny_config, tiny_model, prefix):
    state = {f"{prefix}{k}": v for k, v in _state(tiny_model).items()}
    state["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    state["model_ema.num_updates"] = torch.tensor(3.0)
    path = tmp_path / "prefixed.safetensors"
    save_file(state, str(path))
    _assert_same_weights(load_weights(tiny_config, path), tiny_model)


def test_half_precision_file_loads_into_float32(tmp_path, tiny_config, tiny_model):
    path = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in _state(tiny_model).items()}, str(path))
    loaded = load_weights(tiny_config, path)
    want = {k: v.half().float() for k, v in load_file(str(path)).items()}
    for k, v in loaded.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, want[k]), k
