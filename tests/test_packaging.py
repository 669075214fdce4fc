"""Set-up files agree: pyproject dependencies are in environment.yml; README commands exist."""
import re
import tomllib
from pathlib import Path

import hsnet_lite

ROOT = Path(__file__).resolve().parents[1]


def names(reqs):
    return {re.split(r"[<>=!~ \[]", r.strip(), maxsplit=1)[0].lower() for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = names(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted |= names(extra)
    env = (ROOT / "environment.yml").read_text()
    pip_lines = [line.strip()[2:] for line in env.splitlines() if line.strip().startswith("- ") and "=" in line or ">" in line]
    listed = names([p for p in pip_lines if not p.startswith("python")])
    assert wanted <= listed, wanted - listed
    assert "-e ." in env


def test_readme_commands_and_ci():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_public_names():
    from hsnet_lite import CenterPivotConv4d, Conv4d, HSNet, load_official_checkpoint  # noqa: F401

    assert set(hsnet_lite.__all__) <= set(dir(hsnet_lite))


def test_fused_kernel_source_ships_with_the_package():
    """hsnet_lite.fast.native compiles csrc/center_pivot.c where the package is installed."""
    from hsnet_lite.fast import native

    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "fast/csrc/*.c" in package_data["hsnet_lite"]
    assert native.SOURCE.is_file() and native.SOURCE.parent.name == "csrc"
