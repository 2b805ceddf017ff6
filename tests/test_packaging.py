"""The built wheel holds every package of the source tree, under project-specific names only."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_contains_every_package(tmp_path):
    src = tmp_path / "src"  # a clean copy: a build/ folder left in the checkout would hide a missing package
    for name in ("gte_jax", "convert"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(os.path.join(ROOT, name), src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = [f for f in os.listdir(tmp_path) if f.endswith(".whl")]
    names = zipfile.ZipFile(tmp_path / wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"gte_jax", "gte_jax_convert"}  # never a generic top-level name such as convert
    assert "gte_jax/py.typed" in names, "gte_jax/py.typed is missing from the wheel (PEP 561 marker)"
    for folder, prefix in (("gte_jax", "gte_jax"), ("convert", "gte_jax_convert")):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, f), os.path.join(ROOT, folder))
                    assert f"{prefix}/{rel}" in names, f"{prefix}/{rel} is missing from the wheel"
