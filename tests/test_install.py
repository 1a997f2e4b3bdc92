"""Installation as a new user gets it: the built wheel, run with only its declared dependencies.

The development environment has packages a user's has not (click came in through diffusers once, and
`vaecli` crashed on a clean install while every test passed). So the wheel is installed into a folder
of its own and run by an interpreter that sees the standard library, that folder and the distributions
vaecli declares (with their own dependencies, followed transitively) and nothing else: an undeclared
import fails here as it would on a fresh machine. `.ci/run` also does it for real, in a new venv.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _wheel_tools_missing() -> bool:
    """setuptools builds the wheel; before 70.1 its bdist_wheel lives in the `wheel` package."""
    return importlib.util.find_spec("setuptools") is None or (
        importlib.util.find_spec("wheel") is None and importlib.util.find_spec("setuptools.command.bdist_wheel") is None
    )


pytestmark = pytest.mark.skipif(_wheel_tools_missing(), reason="setuptools (and wheel) needed to build a wheel offline")


def _applies(requirement: Requirement) -> bool:
    """A requirement of the base install: no extra, and its environment marker true here."""
    return requirement.marker is None or requirement.marker.evaluate({"extra": ""})


def _declared_closure(requirements: list[str]) -> dict[str, md.Distribution]:
    """The installed distributions `requirements` pull in, transitively (normalised name -> distribution)."""
    found: dict[str, md.Distribution] = {}
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        if key in found or not _applies(req):
            continue
        found[key] = dist = md.distribution(req.name)
        todo += [Requirement(r) for r in dist.requires or []]
    return found


def _link_distributions(dists: dict[str, md.Distribution], site: Path) -> None:
    """Symlink each distribution's top-level modules (and its .dist-info) into `site`."""
    site.mkdir()
    for dist in dists.values():
        for f in dist.files or []:
            top = f.parts[0]
            if top in ("..", "__pycache__") or top.endswith(".pth") or (site / top).exists():
                continue
            source = Path(dist.locate_file(top))
            if source.exists():
                (site / top).symlink_to(source)


@pytest.fixture(scope="module")
def isolated(tmp_path_factory):
    """(python command prefix, env) running the installed wheel with only the declared dependencies."""
    root = tmp_path_factory.mktemp("install")
    # Build from a copy: pip builds in-tree and would leave build/ and egg-info in the shared checkout.
    src = root / "src"
    shutil.copytree(
        REPO,
        src,
        ignore=shutil.ignore_patterns(".git", "tests", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "runs", "recon", "out"),
        symlinks=True,
    )
    wheels = root / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(wheels)]
    result = subprocess.run(build, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = wheels.glob("vaecli-*.whl")
    target = root / "vaecli-site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)]
    result = subprocess.run(install, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    metadata = md.Distribution.at(next(target.glob("vaecli-*.dist-info")))
    deps = root / "deps-site"
    _link_distributions(_declared_closure(metadata.requires or []), deps)
    # -I: no user site, no PYTHONPATH, no script folder; -S: no site-packages. The path is set explicitly.
    prefix = [sys.executable, "-I", "-S", "-c", f"import sys; sys.path[:0] = [{str(target)!r}, {str(deps)!r}]; sys.argv[0] = 'vaecli'; "]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["VAECLI_CACHE"] = str(root / "cache")  # empty: nothing downloaded, nothing cached
    return wheel, prefix, env


def test_wheel_ships_configs_and_every_package(isolated):
    wheel, _, _ = isolated
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vaecli/configs/registry.yaml" in names
    assert {str(p.relative_to(REPO / "configs").as_posix()) for p in (REPO / "configs").rglob("*.yaml")} <= {
        n.removeprefix("vaecli/configs/") for n in names
    }
    assert "vaecli/assets/vaecli-default.safetensors" in names
    # A package missing from pyproject's list would import from a checkout but not once installed.
    packages = {p.relative_to(REPO).as_posix() for p in (REPO / "vaecli").rglob("__init__.py")}
    assert packages <= names, f"not in the wheel: {sorted(packages - names)}"


def test_readme_main_job_runs_on_the_installed_wheel(isolated, tmp_path):
    """The README's first command, from a folder outside the checkout, with declared dependencies only."""
    _, prefix, env = isolated
    code = "from vaecli.cli.app import main; main()"
    args = ["roundtrip", str(REPO / "samples"), "-o", "recon", "--json"]
    result = subprocess.run([*prefix[:-1], prefix[-1] + code, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "recon").iterdir()) == ["astronaut.png", "immunohistochemistry.png", "retina.png"]
    assert '"mean_psnr"' in result.stdout


def _readme_python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_api_example_runs_as_written(isolated, tmp_path):
    """Every ```python block of the README runs, in order, on a fresh install with an empty cache."""
    _, prefix, env = isolated
    blocks = _readme_python_blocks()
    assert blocks, "the README has no Python example"
    script = tmp_path / "readme_example.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    code = f"import runpy; runpy.run_path({str(script)!r}, run_name='__main__')"
    result = subprocess.run([*prefix[:-1], prefix[-1] + code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_subpackages_are_attributes_after_a_bare_import(isolated, tmp_path):
    _, prefix, env = isolated
    code = (
        "import vaecli\n"
        "assert vaecli.nn.Encoder is vaecli.model.Encoder\n"
        "assert callable(vaecli.weights.checkpoints.load_weights) and vaecli.checkpoints.save_weights is vaecli.weights.save_weights\n"
        "assert vaecli.load_vae is vaecli.api.load_vae\n"
        "print('ok')\n"
    )
    result = subprocess.run([*prefix[:-1], prefix[-1] + code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_help_of_the_installed_wheel_shows_flags_without_a_type(isolated, tmp_path):
    """Help as a clean install renders it (Typer with its own click, no separate click): `--overwrite`, not `--overwrite <bool>`."""
    _, prefix, env = isolated
    code = "from vaecli.cli.app import main; main()"
    result = subprocess.run([*prefix[:-1], prefix[-1] + code, "encode", "--help"], cwd=tmp_path, env=dict(env, COLUMNS="200"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--overwrite" in result.stdout and "<bool>" not in result.stdout and "Usage: vaecli encode [OPTIONS] INPUT..." in result.stdout
