"""`pip install .` gives the library with its runtime dependencies and the `ecgfm` command.

The runtime pins live twice, on purpose: requirements.txt is what Hugging Face Spaces install
(`pip install -r requirements.txt` with only that file present, so it cannot point at the package)
and pyproject.toml is what `pip install .` / `pip install git+...` read. These tests keep the two
equal, and check what a wheel built from this tree really declares and contains. The wheel is built
offline from the installed setuptools (pinned in requirements-dev.txt), in a copy of the tree.
"""
from __future__ import annotations

import configparser
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import ecgfm

REPO = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)$")


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def runtime_pins() -> list[str]:
    return requirement_lines(REPO / "requirements.txt")


def name_of(pin: str) -> str:
    return re.split(r"[=<>!~;\[ ]", pin, maxsplit=1)[0].lower().replace("_", "-")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_requirements_txt_is_a_list_of_exact_pins():
    pins = runtime_pins()
    assert pins, "requirements.txt holds no requirement"
    for pin in pins:
        assert PIN.match(pin), f"requirements.txt: {pin!r} is not an exact name==version pin"
    names = [name_of(pin) for pin in pins]
    assert len(names) == len(set(names)), "requirements.txt names a package twice"
    assert "torch==2.13.0" in pins  # other versions pull multi-GB CUDA builds


def ray_pin() -> str:
    """The Ray extra's pin, as requirements-dev.txt gives it to the tests and CI."""
    (pin,) = [line for line in requirement_lines(REPO / "requirements-dev.txt") if name_of(line) == "ray"]
    return pin


def test_pyproject_declares_the_same_pins_less_gradio():
    project = pyproject()["project"]
    pins = runtime_pins()
    gradio = [pin for pin in pins if name_of(pin) == "gradio"]
    assert len(gradio) == 1
    assert project["dependencies"] == [pin for pin in pins if name_of(pin) != "gradio"]
    assert project["optional-dependencies"] == {"app": gradio, "ray": [ray_pin()]}
    assert re.fullmatch(r"ray\[data\]==[0-9.]+", ray_pin())
    assert project["scripts"] == {"ecgfm": "ecgfm.__main__:cli"}


def test_only_the_ray_module_may_import_ray():
    """Ray is an extra: `import ecgfm`, and every module of the package but ecgfm.batch_ray, never import it."""
    modules = sorted(".".join(path.relative_to(REPO).with_suffix("").parts) for path in (REPO / "ecgfm").rglob("*.py")
                     if "__pycache__" not in path.parts)
    modules = [name.removesuffix(".__init__") for name in modules if name != "ecgfm.batch_ray"]
    assert "ecgfm.batch" in modules and "ecgfm.io.wfdb_format" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    assert 'ray' not in sys.modules, name\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_space_runs_the_gradio_it_pins():
    """Spaces install the README's sdk_version of gradio; it must be the version requirements.txt pins."""
    front_matter = (REPO / "README.md").read_text().split("---")[1]
    sdk_version = re.search(r"^sdk_version:\s*(\S+)\s*$", front_matter, re.M).group(1)
    assert f"gradio=={sdk_version}" in runtime_pins()


def test_build_outputs_are_ignored_by_git():
    names = ["build/lib/x.py", "dist/ecgfm-0.1.0.tar.gz", "ecgfm.egg-info/PKG-INFO", ".eggs/README.txt"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=REPO, capture_output=True, text=True)
    if done.returncode == 128:
        pytest.skip(f"git cannot check this tree: {done.stderr.strip()}")
    assert done.stdout.split() == names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the working tree, built without network and without dependencies."""
    root = tmp_path_factory.mktemp("packaging")
    source = root / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copytree(REPO / "ecgfm", source / "ecgfm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--disable-pip-version-check", "-q", str(source), "-w", str(root / "out")],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (root / "out").glob("ecgfm-*.whl")
    return built


def dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [m for m in archive.namelist() if m.endswith(f".dist-info/{name}")]
        return archive.read(member).decode()


def test_the_wheel_requires_the_runtime_pins(wheel):
    metadata = email.parser.Parser().parsestr(dist_info(wheel, "METADATA"))
    assert metadata["Name"] == "ecgfm" and metadata["Version"] == ecgfm.__version__
    requires = metadata.get_all("Requires-Dist")
    plain = [req for req in requires if ";" not in req]
    assert plain == [pin for pin in runtime_pins() if name_of(pin) != "gradio"]
    gradio = next(pin for pin in runtime_pins() if name_of(pin) == "gradio")
    assert [req for req in requires if ";" in req] == [f'{gradio}; extra == "app"', f'{ray_pin()}; extra == "ray"']
    assert metadata.get_all("Provides-Extra") == ["app", "ray"]


def test_the_wheel_has_the_ecgfm_command(wheel):
    entry_points = configparser.ConfigParser()
    entry_points.read_string(dist_info(wheel, "entry_points.txt"))
    assert dict(entry_points["console_scripts"]) == {"ecgfm": "ecgfm.__main__:cli"}


def test_the_wheel_holds_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        inside = {name for name in archive.namelist() if not name.startswith("ecgfm-")}
    modules = {path.relative_to(REPO).as_posix() for path in (REPO / "ecgfm").rglob("*.py")
               if "__pycache__" not in path.parts}
    assert {"ecgfm/__init__.py", "ecgfm/__main__.py", "ecgfm/io/__init__.py", "ecgfm/io/wfdb_format.py"} <= modules
    assert inside == modules


def test_the_installed_command_runs(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                           "--disable-pip-version-check", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([str(target / "bin" / "ecgfm"), "--version"], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"ecgfm {ecgfm.__version__}\n", "")
    done = subprocess.run([sys.executable, "-c", "import ecgfm.io, ecgfm.__main__; print(ecgfm.io.__file__)"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 0 and Path(done.stdout.strip()).is_relative_to(target), done.stderr
