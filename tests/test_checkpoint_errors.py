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


def test_wrong_shapes(tmp_path, tiny_config, tiny_model):
    """Wider inner levels: the file's outer facts (ch, levels, z) agree, so the strict check lists the shapes."""
    path = tmp_path / "plain.safetensors"
    save_file(_state(tiny_model), str(path))  # no config of its own
    wider = tiny_config.replace(ch_mult=(1, 4), name="wider")
    message = _refused(wider, path, "mis-shaped")
    assert "does not match wider" in message
    assert "decoder.conv_in.bias [64] != [128]" in message
    with torch.device("meta"):
        narrow_shapes = {k: v.shape for k, v in AutoencoderKL(tiny_config).state_dict().items()}
        wide_shapes = {k: v.shape for k, v in AutoencoderKL(wider).state_dict().items()}
    differing = sum(narrow_shapes[k] != wide_shapes[k] for k in wide_shapes)
    assert f"({differing} in all)" in message


class _BuildCounter:
    """Counts model constructions (the real builder runs): proves a file was judged before any build."""

    def __init__(self, monkeypatch):
        import vaecli.weights.checkpoints as checkpoints

        self.count, real = 0, checkpoints.build_autoencoder

        def counted(config):
            self.count += 1
            return real(config)

        monkeypatch.setattr(checkpoints, "build_autoencoder", counted)


@pytest.mark.parametrize(
    "change, shown",
    [
        (dict(ch=64), "ch 32 (file) vs 64 (config)"),
        (dict(num_res_blocks=3), "num_res_blocks 1 (file) vs 3 (config)"),
        (dict(ch_mult=(1, 2, 2)), "levels 2 (file) vs 3 (config)"),
        (dict(z_channels=8, embed_dim=8), "z_channels 4 (file) vs 8 (config)"),
        (dict(embed_dim=None), "embed_dim 4 (file) vs None (config)"),
    ],
)
def test_another_architecture_is_refused_before_building(tmp_path, tiny_config, tiny_model, monkeypatch, change, shown):
    path = tmp_path / "plain.safetensors"
    save_file(_state(tiny_model), str(path))
    builds = _BuildCounter(monkeypatch)
    message = _refused(tiny_config.replace(name="other", **change), path, "another architecture than other")
    assert shown in message and builds.count == 0


def test_diffusers_file_of_another_architecture_is_refused_before_building(tmp_path, tiny_config, monkeypatch):
    """The facts are read after renaming, so a diffusers-layout file is judged the same way."""
    diffusers = pytest.importorskip("diffusers")
    from vaecli.weights.keymap import diffusers_vae_kwargs

    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**diffusers_vae_kwargs(tiny_config))
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    builds = _BuildCounter(monkeypatch)
    _refused(tiny_config.replace(num_res_blocks=2), path, "num_res_blocks 1 .file. vs 2 .config.")
    assert builds.count == 0
    loaded = load_weights(tiny_config, path)
    assert builds.count == 1 and torch.equal(loaded.state_dict()["decoder.up.0.block.0.conv1.weight"], ref.state_dict()["decoder.up_blocks.1.resnets.0.conv1.weight"])


def test_given_config_must_agree_with_the_files_own(tiny_config, tiny_weights, monkeypatch):
    builds = _BuildCounter(monkeypatch)
    message = _refused(tiny_config.replace(ch=64, name="wider"), tiny_weights, "describe different architectures")
    assert "its own config (tiny)" in message and "given with it (wider)" in message
    assert "ch 32 (tiny) vs 64 (wider)" in message and builds.count == 0
    # Only the architecture counts: another name, scale or attention kernel of the same model loads.
    same = tiny_config.replace(name="renamed", scaling_factor=0.25, attn_type="vanilla-xformers", dropout=0.1)
    assert isinstance(load_weights(same, tiny_weights), AutoencoderKL)
    _refused(tiny_config.replace(norm_num_groups=16, name="g16"), tiny_weights, "norm_num_groups 32 .tiny. vs 16 .g16.")


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
