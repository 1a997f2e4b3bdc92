"""LPIPS: the lpips package's real vgg.pth, a random VGG16 backbone in torchvision's key layout
(no real backbone is reachable offline), and a float64 functional reference."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vaecli.errors import CheckpointError, OfflineError
from vaecli.quality.lpips import LPIPS, load_lpips, vgg16_features
from vaecli.weights import download, registry

LPIPS_MD5 = "d507d7349b931f0638a25a48a722f98a"  # the seed's MD5_MAP["vgg_lpips"]


@pytest.fixture(scope="module")
def lpips_vgg_pth() -> Path:
    """The lpips package's own vgg.pth, found without importing lpips (which needs torchvision)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the lpips package (a test dependency) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "weights" / "v0.1" / "vgg.pth"


@pytest.fixture(scope="module")
def random_backbone(tmp_path_factory) -> Path:
    """A seeded random VGG16 saved as torchvision's vgg16 file is laid out: `features.*` plus a
    classifier that the loader must ignore."""
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(8, 8)
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def model(lpips_vgg_pth, random_backbone) -> LPIPS:
    return LPIPS.from_files(lpips_vgg_pth, random_backbone)


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    """A real photograph (scikit-image), 64x64, in [-1, 1], shape (1, 3, 64, 64)."""
    skdata = pytest.importorskip("skimage.data")
    img = Image.fromarray(skdata.astronaut()).resize((64, 64), Image.BICUBIC)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 127.5 - 1)  # (H, W, 3)
    return x.permute(2, 0, 1)[None]  # (1, 3, H, W)


def test_lpips_package_vgg_pth_matches_the_seed_md5_and_loads(lpips_vgg_pth, model):
    assert download.md5_hash(lpips_vgg_pth) == LPIPS_MD5
    assert registry.get_entry("vgg_lpips").files[0].size == lpips_vgg_pth.stat().st_size
    published = torch.load(lpips_vgg_pth, map_location="cpu", weights_only=True)
    lins = (model.lin0, model.lin1, model.lin2, model.lin3, model.lin4)
    for i, lin in enumerate(lins):
        assert torch.equal(lin.model[1].weight, published[f"lin{i}.model.1.weight"])
    assert all((w >= 0).all() for w in published.values())  # what makes LPIPS a distance


def test_lpips_of_an_image_with_itself_is_zero_and_grows_with_noise(model, astronaut):
    torch.manual_seed(1)
    noise = torch.randn_like(astronaut)
    sigmas = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)
    x = astronaut.expand(len(sigmas), -1, -1, -1)
    y = (astronaut + torch.tensor(sigmas).view(-1, 1, 1, 1) * noise).clamp(-1, 1)  # (6, 3, 64, 64)
    with torch.no_grad():
        d = model(x, y)
    assert d.shape == (len(sigmas),) and d[0] == 0
    assert (d[1:] > d[:-1]).all(), d


def _reference_lpips(lin_sd: dict, backbone_sd: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS written from its definition with functional ops in float64: VGG16 convs read by
    their torchvision indices, taps after the last ReLU of each of the five blocks."""
    blocks = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))  # conv indices per block
    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def taps(img):
        h, out = (img.double() - shift) / scale, []
        for b, convs in enumerate(blocks):
            if b:
                h = F.max_pool2d(h, 2)
            for i in convs:
                h = F.relu(F.conv2d(h, backbone_sd[f"features.{i}.weight"].double(), backbone_sd[f"features.{i}.bias"].double(), padding=1))
            out.append(h)
        return out

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (fx, fy) in enumerate(zip(taps(x), taps(y))):
        nx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
        ny = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
        w = lin_sd[f"lin{k}.model.1.weight"].double().flatten()  # (C,)
        total += torch.einsum("bchw,c->bhw", (nx - ny) ** 2, w).mean(dim=(1, 2))
    return total


def test_lpips_matches_a_float64_functional_reference(model, lpips_vgg_pth, random_backbone, astronaut):
    torch.manual_seed(2)
    small = F.avg_pool2d(astronaut, 2)  # (1, 3, 32, 32): float64 convolutions are slow
    x = torch.cat([small, small.flip(-1)])  # (2, 3, 32, 32)
    y = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    lin_sd = torch.load(lpips_vgg_pth, map_location="cpu", weights_only=True)
    backbone_sd = torch.load(random_backbone, map_location="cpu", weights_only=True)
    want = _reference_lpips(lin_sd, backbone_sd, x, y)
    with torch.no_grad():
        got64 = LPIPS.from_files(lpips_vgg_pth, random_backbone).double()(x.double(), y.double())
        got32 = model(x, y)
    # not closer than 1e-7: the ScalingLayer constants are float32 buffers, as in lpips
    torch.testing.assert_close(got64, want, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(got32.double(), want, rtol=1e-4, atol=1e-6)


def test_lpips_equals_the_lpips_package_with_the_same_backbone(model, random_backbone, astronaut):
    pytest.importorskip("torchvision", reason="the lpips package imports torchvision, which is not installed here")
    import lpips

    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    backbone = torch.load(random_backbone, map_location="cpu", weights_only=True)
    for name, module in ref.net.named_children():  # slice1..slice5 keep torchvision's indices
        for idx, layer in module.named_children():
            if isinstance(layer, torch.nn.Conv2d):
                layer.weight.data.copy_(backbone[f"features.{idx}.weight"])
                layer.bias.data.copy_(backbone[f"features.{idx}.bias"])
    torch.manual_seed(3)
    y = (astronaut + 0.1 * torch.randn_like(astronaut)).clamp(-1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(astronaut, y), ref(astronaut, y).flatten(), rtol=1e-4, atol=1e-6)


def test_load_lpips_from_the_cache(tmp_path, lpips_vgg_pth, random_backbone):
    assert load_lpips("cpu", cache_dir=tmp_path) is None  # not fetched: the caller prints the hint
    lin_dest = registry.cached_file("vgg_lpips", registry.get_entry("vgg_lpips").files[0], tmp_path)
    vgg_dest = registry.cached_file("vgg16", registry.get_entry("vgg16").files[0], tmp_path)
    lin_dest.parent.mkdir(parents=True)
    shutil.copy(lpips_vgg_pth, lin_dest)
    assert load_lpips("cpu", cache_dir=tmp_path) is None  # one file is not enough
    vgg_dest.parent.mkdir(parents=True)
    shutil.copy(random_backbone, vgg_dest)
    assert isinstance(load_lpips("cpu", cache_dir=tmp_path), LPIPS)
    lin_dest.write_bytes(lin_dest.read_bytes()[:-1] + b"\0")
    with pytest.raises(CheckpointError, match="md5 mismatch"):
        load_lpips("cpu", cache_dir=tmp_path)


def test_get_ckpt_path_uses_a_good_file_and_refetches_a_bad_one(tmp_path, lpips_vgg_pth, monkeypatch):
    """A cached vgg.pth with the right md5 is used as is; with `check`, a bad one is fetched
    again (here the offline switch stops that before any connection)."""
    shutil.copy(lpips_vgg_pth, tmp_path / "vgg.pth")
    assert download.get_ckpt_path("vgg_lpips", tmp_path, check=True) == str(tmp_path / "vgg.pth")
    (tmp_path / "vgg.pth").write_bytes(b"\0" * 7289)
    monkeypatch.setenv("VAECLI_OFFLINE", "1")
    assert download.get_ckpt_path("vgg_lpips", tmp_path) == str(tmp_path / "vgg.pth")  # without check: trusted
    with pytest.raises(OfflineError):
        download.get_ckpt_path("vgg_lpips", tmp_path, check=True)
