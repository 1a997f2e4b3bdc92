"""A weights file's format is told from its bytes: the safetensors layout first, then pickle signatures.

The first byte of a safetensors file is the low byte of its header length: 0x80 (the pickle opcode)
in about one valid file in 32, and `PK` (zip) for some lengths. Such files must load.
"""

from __future__ import annotations

import struct

import pytest
import torch
from safetensors.torch import save

from vaecli.api import load_vae
from vaecli.errors import CheckpointError
from vaecli.weights.checkpoints import (
    CONFIG_METADATA_KEY,
    config_from_weights,
    load_weights,
    read_metadata,
)
from vaecli.weights.formats import read_header


def _with_header_length(state: dict, metadata: dict[str, str], wanted: int) -> bytes:
    """safetensors bytes of `state` whose header is exactly `wanted` bytes long (padded via metadata)."""
    bare = save(state, metadata={**metadata, "pad": ""})
    raw_len = len(bare[8 : 8 + struct.unpack("<Q", bare[:8])[0]].rstrip(b" "))  # before safetensors' own padding
    assert wanted % 8 == 0 and wanted >= raw_len, "safetensors pads headers to a multiple of 8"
    data = save(state, metadata={**metadata, "pad": "x" * (wanted - raw_len)})
    assert struct.unpack("<Q", data[:8])[0] == wanted
    return data


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _model_header_length(model, metadata: dict[str, str], low: int) -> int:
    """The smallest header length that holds the model's header and whose low byte(s) are `low`."""
    bare = save(_state(model), metadata={**metadata, "pad": ""})
    base = struct.unpack("<Q", bare[:8])[0]
    step = 1 << (8 * ((low.bit_length() + 7) // 8))
    return low + step * max(0, -(-(base - low) // step))


@pytest.mark.parametrize("low, first_bytes", [(0x80, b"\x80"), (0x4B50, b"PK")], ids=["pickle-opcode", "zip-letters"])
def test_self_describing_file_whose_length_looks_like_a_pickle_loads(tmp_path, tiny_config, tiny_model, low, first_bytes):
    metadata = {CONFIG_METADATA_KEY: tiny_config.to_json()}
    data = _with_header_length(_state(tiny_model), metadata, _model_header_length(tiny_model, metadata, low))
    assert data.startswith(first_bytes)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert config_from_weights(path) == tiny_config
    loaded = load_weights(tiny_config, path)
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    vae = load_vae(weights=path, device="cpu", dtype="fp32")  # the config comes from the file itself
    assert vae.config == tiny_config


@pytest.mark.parametrize("length", [0x0280, 0x0580], ids=["0x80-0x02", "0x80-0x05"])
def test_header_that_reads_as_a_pickle_protocol_is_still_safetensors(tmp_path, length):
    """0x80 then 0x02..0x05 is exactly how a pickle starts; the layout decides first."""
    data = _with_header_length({"t": torch.arange(6.0).reshape(2, 3)}, {"note": "hi"}, length)
    assert data[:2] in (b"\x80\x02", b"\x80\x05")
    path = tmp_path / "small.safetensors"
    path.write_bytes(data)
    header = read_header(path)
    assert header is not None and header.shapes == {"t": (2, 3)} and header.dtypes == {"t": "F32"}
    assert read_metadata(path)["note"] == "hi"


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_real_torch_save_file_still_gets_the_pickle_message(tmp_path, tiny_config, tiny_model, zip_format):
    path = tmp_path / "weights.safetensors"  # the wrong suffix: only the bytes can tell
    torch.save(_state(tiny_model), path, _use_new_zipfile_serialization=zip_format)
    assert read_header(path) is None
    with pytest.raises(CheckpointError, match="pickle.*--allow-pickle"):
        load_weights(tiny_config, path)
    assert load_weights(tiny_config, path, allow_pickle=True).config == tiny_config


def test_safetensors_cut_inside_its_data_says_truncated(tmp_path):
    data = _with_header_length({"t": torch.zeros(64)}, {}, 0x0280)
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match="damaged or truncated safetensors") as err:
        read_header(path)
    assert "pickle" not in str(err.value)  # its first bytes are 0x80 0x02, yet it is no pickle


def test_header_with_offsets_outside_the_file_is_refused(tmp_path):
    header = b'{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,4096]}}'
    path = tmp_path / "lying.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    with pytest.raises(CheckpointError, match="damaged or truncated"):
        read_header(path)
