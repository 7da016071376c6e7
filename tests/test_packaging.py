"""Packaging: the wheel carries the OpenCL kernels, and installed code finds them.

``kernels/`` sits at the top of the repository and is installed as the package
``ewoksxpcs.kernels``; code loads the ``.cl`` files through ``importlib.resources``. This checks it
for a wheel installed into a fresh directory and for the editable install the tests run from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest

import ewoksxpcs

ROOT = Path(__file__).resolve().parents[1]
KERNELS = sorted(p.name for p in (ROOT / "kernels").glob("*.cl"))
SOURCES = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "ewoksxpcs").rglob("*.py")
    if "__pycache__" not in p.parts
)

pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").exists(), reason="needs the source tree"
)

PROBE = """
import json, sys
from importlib import resources
import ewoksxpcs, ewoksxpcs.kernels
files = sorted(p.name for p in resources.files("ewoksxpcs.kernels").iterdir() if p.name.endswith(".cl"))
text = {name: resources.files("ewoksxpcs.kernels").joinpath(name).read_text() for name in files}
print(json.dumps({"file": ewoksxpcs.__file__, "kernels": files,
                  "sizes": {k: len(v) for k, v in text.items()},
                  "methods": ewoksxpcs.available_methods()}))
"""


def probe(env_path=None, cwd=None):
    env = dict(os.environ)
    if env_path is None:
        env.pop("PYTHONPATH", None)
    else:
        env["PYTHONPATH"] = str(env_path)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=cwd, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_kernel_sources_exist():
    assert KERNELS, "kernels/ holds no .cl file"


def project_files():
    """Files of the checkout: tracked and untracked-but-not-ignored (what a commit would hold)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist)
        skip = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache"}
        return [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
                if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)]
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Build the wheel from a copy of the checkout (the checkout itself stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in project_files():
        if name.startswith("tests/") or name.endswith(".h5"):
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    dist = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-input", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(dist.glob("ewoksxpcs-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contents(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    cl = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("ewoksxpcs/kernels/") and n.endswith(".cl"))
    assert cl, "the wheel holds no ewoksxpcs/kernels/*.cl"
    assert cl == KERNELS
    # Every module of the source tree is packaged (a sub-package missing from pyproject's
    # package list would silently be left out).
    missing = [s for s in SOURCES if s not in names]
    assert not missing, f"modules missing from the wheel: {missing}"
    assert not any(n.startswith("kernels/") or n.startswith("tests/") for n in names)


def test_installed_wheel_finds_kernels(wheel, tmp_path):
    target = tmp_path / "target"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "-q", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = probe(env_path=target, cwd=tmp_path)
    # The code comes from the installed wheel, not from the checkout.
    assert Path(info["file"]).resolve().is_relative_to(target.resolve()), info["file"]
    assert info["kernels"] == KERNELS
    for name in KERNELS:
        assert info["sizes"][name] == len((ROOT / "kernels" / name).read_text())
    assert "reference" in info["methods"]


def test_editable_install_finds_kernels(tmp_path):
    files = sorted(p.name for p in resources.files("ewoksxpcs.kernels").iterdir()
                   if p.name.endswith(".cl"))
    assert files == KERNELS
    # The same from a fresh interpreter started outside the checkout.
    info = probe(cwd=tmp_path)
    assert info["kernels"] == KERNELS
    assert Path(info["file"]).resolve() == Path(ewoksxpcs.__file__).resolve()


def test_ci_runs_the_readme_test_command():
    # The README's set-up commands open it; .ci/run must run the test one verbatim.
    readme = (ROOT / "README.md").read_text().splitlines()
    block = readme[readme.index("```") + 1:]
    block = block[:block.index("```")]
    assert block == [
        'python3 -m venv .venv && . .venv/bin/activate && pip install -q -e ".[pocl]" && ewoksxpcs demo',
        'python3 -m venv .venv && . .venv/bin/activate && pip install -q -e ".[test]" && python -m pytest -q',
    ]
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert block[1] in ci
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
