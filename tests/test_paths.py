"""daemon.paths and the package data: shipped models/mappings travel with an install,
names resolve user folder first, and the user folders follow each platform's convention."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from daemon import paths
from daemon.errors import MappingError, ModelNotFoundError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def user_home(tmp_path, monkeypatch):
    """Empty XDG folders (Linux conventions) for the performer's own files."""
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path


def test_user_folders_per_platform(tmp_path, monkeypatch):
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    assert paths.user_dir("mappings") == tmp_path / "home" / ".config" / "canne" / "mappings"
    assert paths.user_dir("models") == tmp_path / "home" / ".local" / "share" / "canne" / "models"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert paths.user_dir("mappings") == tmp_path / "cfg" / "canne" / "mappings"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert paths.user_dir("models") == tmp_path / "home" / "Library" / "Application Support" / "CANNe" / "models"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    monkeypatch.setenv("LOCALAPPDATA", str(tmp_path / "Local"))
    assert paths.user_dir("mappings") == tmp_path / "Roaming" / "CANNe" / "mappings"
    assert paths.user_dir("models") == tmp_path / "Local" / "CANNe" / "models"


def test_names_resolve_user_folder_first_then_shipped(user_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = paths.shipped_dir("mappings") / "korg_nanokontrol2.yaml"
    assert paths.find_mapping("korg_nanokontrol2") == shipped
    assert paths.find_mapping("mappings/korg_nanokontrol2.yaml") == shipped  # the README's checkout form
    assert paths.default_mapping() == paths.shipped_dir("mappings") / "default.yaml"
    assert paths.default_model() == paths.shipped_dir("models") / "default"
    own = paths.user_dir("mappings")
    own.mkdir(parents=True)
    (own / "korg_nanokontrol2.yaml").write_text("version: 1\n")
    (own / "default.yaml").write_text("version: 1\n")
    assert paths.find_mapping("korg_nanokontrol2") == own / "korg_nanokontrol2.yaml"
    assert paths.default_mapping() == own / "default.yaml"
    # A path that exists is used as given, whatever the folders hold.
    mine = tmp_path / "x.yaml"
    mine.write_text("version: 1\n")
    assert paths.find_mapping(str(mine)) == mine


def test_unknown_names_fail_with_one_line_listing_what_exists(user_home):
    with pytest.raises(ModelNotFoundError) as err:
        paths.find_model("no-such-model")
    text = str(err.value)
    assert "\n" not in text and "no-such-model" in text and "default" in text
    with pytest.raises(MappingError, match="available: .*korg_nanokontrol2"):
        paths.find_mapping("nope")
    with pytest.raises(ModelNotFoundError):
        paths.find_model("some/dir/that/is/not/here")


def test_is_shipped():
    assert paths.is_shipped(paths.shipped_dir("mappings") / "default.yaml")
    assert paths.is_shipped(REPO / "mappings" / "default.yaml")
    assert not paths.is_shipped(Path("/tmp/default.yaml"))


# -- the package: a wheel built from the tree, installed elsewhere ------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build a wheel from a copy of the tree (no build/ left in the checkout), install it with
    ``pip --target`` into a folder outside the checkout."""
    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "daemon", "training", "models", "mappings"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_wheel(sys.argv[1]))")
    r = subprocess.run([sys.executable, "-c", code, str(tmp / "dist")], cwd=src, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = tmp / "dist" / r.stdout.strip().splitlines()[-1]
    site = tmp / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return wheel, site, tmp


def test_wheel_carries_every_model_folder_and_mapping(installed):
    wheel, _, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in sorted(p for p in (REPO / "models").iterdir() if p.is_dir()):
        for f in folder.rglob("*"):
            if f.is_file() and "__pycache__" not in f.parts:
                rel = f.relative_to(REPO / "models").as_posix()
                assert f"daemon/_shipped/models/{rel}" in names
    for m in (REPO / "mappings").glob("*.yaml"):
        assert f"daemon/_shipped/mappings/{m.name}" in names


def test_installed_package_resolves_defaults_inside_itself(installed):
    _, site, tmp = installed
    env = dict(os.environ, PYTHONPATH=str(site), XDG_CONFIG_HOME=str(tmp / "cfg"), XDG_DATA_HOME=str(tmp / "data"))
    code = ("import daemon, daemon.paths as p; from daemon.core.model import DecoderModel; "
            "print(daemon.__file__); print(p.default_model()); print(p.default_mapping()); "
            "print(DecoderModel(p.default_model()).latent_dim)")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pkg, model, mapping, dim = r.stdout.split("\n")[:4]
    for p in (pkg, model, mapping):
        assert Path(p).is_relative_to(site), r.stdout
    assert model.endswith(os.path.join("_shipped", "models", "default")) and int(dim) > 0
    r = subprocess.run([sys.executable, "-m", "daemon.app.cli", "--version"], cwd=tmp, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("canne ") and str(site) in r.stdout, r.stdout + r.stderr
