"""FLUX.2's autoencoder against diffusers' AutoencoderKLFlux2 plus Flux2Pipeline's own patchify and BatchNorm
normalisation (fp32, random weights, a real photograph over 1024 px wide), and its inverse for decoding."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from tests.clitools import run_main
from tests.reference_models import random_diffusers, to_pixels, wide_photo
from vaecli.api import load_vae
from vaecli.config import shipped_config
from vaecli.io.images import to_uint8
from vaecli.io.latents import read_latent
from vaecli.io.provenance import read_provenance
from vaecli.model.flux2 import AutoencoderKLFlux2, patchify, unpatchify
from vaecli.weights import registry
from vaecli.weights.checkpoints import guess_config_from_weights, load_weights
from vaecli.weights.diffusers_config import config_from_diffusers
from vaecli.weights.tensor_source import model_names

diffusers = pytest.importorskip("diffusers")

REL_TOL = 1e-4
TINY = dict(
    block_out_channels=(32, 64, 64),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    latent_channels=4,
)


def _pipeline_functions() -> dict:
    """Flux2Pipeline's own retrieve_latents, _patchify_latents, _unpatchify_latents and _encode_vae_image,
    compiled alone from diffusers' source file: importing the pipeline module needs transformers, which is
    not a test dependency. The code that runs is diffusers', unchanged."""
    path = Path(diffusers.__file__).parent / "pipelines" / "flux2" / "pipeline_flux2.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Flux2Pipeline")
    wanted = {"_patchify_latents", "_unpatchify_latents", "_encode_vae_image"}
    methods = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {m.name for m in methods} == wanted, "diffusers' Flux2Pipeline changed shape"
    for m in methods:
        m.decorator_list = []  # @staticmethod: called as plain functions here
    retrieve = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "retrieve_latents")
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=[retrieve, *methods], type_ignores=[]), str(path), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def pipeline():
    return _pipeline_functions()


@pytest.fixture(scope="module")
def flux2(tmp_path_factory):
    """A random diffusers AutoencoderKLFlux2 (BatchNorm statistics random too), saved as diffusers saves it."""
    ref = random_diffusers("AutoencoderKLFlux2", **TINY)
    folder = tmp_path_factory.mktemp("flux2") / "vae"
    ref.save_pretrained(folder, safe_serialization=True)
    return ref, folder


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    return to_pixels(wide_photo(96, 1024))  # latent 24 x 256 at f4, 12 x 128 after 2x2 patches


def _close(got: torch.Tensor, want: torch.Tensor, rel: float = REL_TOL) -> bool:
    return got.shape == want.shape and bool((got - want).abs().max() <= rel * want.abs().max())


def test_patchify_is_the_pipelines_and_unpatchify_inverts_it(pipeline):
    z = torch.randn(2, 4, 6, 10)
    assert torch.equal(patchify(z, (2, 2)), pipeline["_patchify_latents"](z))
    assert torch.equal(unpatchify(patchify(z, (2, 2)), (2, 2)), z)
    assert torch.equal(unpatchify(patchify(z, (2, 2)), (2, 2)), pipeline["_unpatchify_latents"](pipeline["_patchify_latents"](z)))


def test_encode_equals_diffusers_encode_patchify_normalise(flux2, pipeline, photo):
    """What the transformer consumes: Flux2Pipeline._encode_vae_image on diffusers' model, and ours from the
    same diffusers folder (config.json names AutoencoderKLFlux2)."""
    ref, folder = flux2
    vae = load_vae(str(folder), device="cpu", dtype="fp32")
    assert isinstance(vae, AutoencoderKLFlux2) and vae.config.patch_size == (2, 2) and vae.config.batch_norm_eps == 1e-4
    with torch.no_grad():
        want = pipeline["_encode_vae_image"](SimpleNamespace(vae=ref, _patchify_latents=pipeline["_patchify_latents"]), photo, None)
        got = vae.normalize_latents(vae.encode(photo).mode())
    assert got.shape == (1, 16, 12, 128) and _close(got, want)


def test_decode_inverts_the_normalisation(flux2, pipeline, photo):
    """Back from the transformer's latents as Flux2Pipeline does (x * std + mean, unpatchify), then decode:
    the same latents and the same image as decoding the encoder's own."""
    ref, folder = flux2
    vae = load_vae(str(folder), device="cpu", dtype="fp32")
    with torch.no_grad():
        raw = vae.encode(photo).mode()  # (1, 4, 24, 256)
        back = vae.denormalize_latents(vae.normalize_latents(raw))
        assert _close(back, raw, 1e-6)
        crop = vae.normalize_latents(raw)[..., :8]  # decoding is the costly half: 16 latent columns
        mean = ref.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(ref.bn.running_var.view(1, -1, 1, 1) + ref.config.batch_norm_eps)
        want = ref.decode(pipeline["_unpatchify_latents"](crop * std + mean)).sample
        got = vae.decode(vae.denormalize_latents(crop))
        assert _close(got, want)
        assert _close(got, vae.decode(raw[..., :16]), 1e-5)


def test_bfl_layout_loads_the_same_weights_and_tells_its_architecture(flux2, tmp_path):
    """black-forest-labs' ae.safetensors keeps the quant convs inside encoder/decoder and the statistics
    under bn.* (with BatchNorm's integer step counter); the loader maps it, and the shapes alone tell FLUX.2."""
    _, folder = flux2
    vae = load_vae(str(folder), device="cpu", dtype="fp32")
    renames = {"quant_conv.": "encoder.quant_conv.", "post_quant_conv.": "decoder.post_quant_conv."}
    bfl = {}
    for k, v in vae.state_dict().items():
        prefix = next((p for p in renames if k.startswith(p)), None)
        bfl[renames[prefix] + k[len(prefix) :] if prefix else k] = v.contiguous()
    bfl["bn.num_batches_tracked"] = torch.tensor(1234)
    path = tmp_path / "ae.safetensors"
    save_file(bfl, str(path))
    loaded = load_weights(vae.config, path)
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in loaded.state_dict().items())
    guessed = guess_config_from_weights(path)
    differ = [key for key, *_ in guessed.architecture_differences(vae.config) if key != "resolution"]
    assert differ == [] and guessed.scaling_factor is None


def test_shipped_config_fits_diffusers_flux2_and_its_key_layout():
    """diffusers' default AutoencoderKLFlux2 is FLUX.2's: its config reads as our shipped flux2-vae, and every
    tensor of its state dict maps onto ours with the right shape (so the real vae/ folders load)."""
    with torch.device("meta"):
        ref = diffusers.AutoencoderKLFlux2()
        ours = AutoencoderKLFlux2(shipped_config("flux2-vae"))
    read = config_from_diffusers({**ref.config, "_class_name": "AutoencoderKLFlux2"}, "diffusers default")
    differ = [key for key, *_ in read.architecture_differences(shipped_config("flux2-vae")) if key != "resolution"]
    assert differ == []
    _, names = model_names(ref.state_dict())
    theirs = {k: tuple(ref.state_dict()[n].shape) for k, n in names.items()}
    want = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert set(theirs) == set(want)
    assert all(s == want[k] or want[k] == (*s, 1, 1) for k, s in theirs.items())


def test_registry_entry():
    entry = registry.get_entry("flux2-vae")
    (wf,) = entry.files
    assert entry.config == "flux2-vae" and entry.gated and "Apache-2.0" in entry.license
    assert wf.urls == ("https://huggingface.co/black-forest-labs/FLUX.2-dev/resolve/main/ae.safetensors",)
    assert wf.sha256 is None  # not published: recorded on the first download


def test_cli_encode_writes_what_the_transformer_consumes_and_decode_inverts_it(flux2, pipeline, tmp_path, capsys):
    """Through the CLI on a real photograph of odd size: `encode --model FOLDER` pads to a multiple of factor x patch
    (8 x 2 here; 16 for FLUX.2) and stores Flux2Pipeline._encode_vae_image of the padded image, the layout
    recorded; `decode` with no flags gives diffusers' decode of it, cropped back to the photograph's size."""
    ref, folder = flux2
    photo = wide_photo(98, 1029)  # a multiple of 4 (this model's factor) would be 100 high; of 8, 104
    Image.fromarray(photo).save(tmp_path / "photo.png")
    code, _, err = run_main(capsys, "encode", tmp_path / "photo.png", "--model", folder, "--device", "cpu", "-o", tmp_path / "lat")
    assert code == 0, err
    stored = read_latent(tmp_path / "lat" / "photo.safetensors")
    assert stored.meta.layout == "patchified" and not stored.meta.scaled and stored.meta.size_handling.endswith("to 1032x104")
    assert read_provenance(tmp_path / "lat" / "photo.safetensors")["options"]["layout"] == "patchified"

    x = F.pad(to_pixels(photo), (0, 3, 0, 6), mode="reflect")  # (1, 3, 104, 1032): vaecli's padding, right and bottom
    with torch.no_grad():
        want = pipeline["_encode_vae_image"](SimpleNamespace(vae=ref, _patchify_latents=pipeline["_patchify_latents"]), x, None)
        assert stored.tensor.shape == (16, 13, 129) and _close(stored.tensor[None], want)
        mean = ref.bn.running_mean.view(1, -1, 1, 1)
        std = torch.sqrt(ref.bn.running_var.view(1, -1, 1, 1) + ref.config.batch_norm_eps)
        image = ref.decode(pipeline["_unpatchify_latents"](want * std + mean)).sample[0, :, :98, :1029]  # (3, 98, 1029)
    code, _, err = run_main(capsys, "decode", tmp_path / "lat" / "photo.safetensors", "--device", "cpu", "-o", tmp_path / "dec")
    assert code == 0, err
    got = np.asarray(Image.open(tmp_path / "dec" / "photo.png")).astype(int)
    assert got.shape == (98, 1029, 3)
    assert np.abs(got - to_uint8(image.add(1).div(2).clamp(0, 1)).astype(int)).max() <= 1
