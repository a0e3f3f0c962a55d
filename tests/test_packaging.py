"""The installed package holds every folder of the source tree (an editable install hides a
package missing from pyproject's list; a wheel would not have it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_for_installation():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "recsys").rglob("__init__.py")}
    assert found - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert {p for p in listed if p.startswith("recsys.")} <= found


@pytest.mark.parametrize("package", ["recsys.data", "recsys.evaluation", "recsys.jobs", "recsys.tracking"])
def test_lazily_exported_names_are_not_also_submodules(package):
    """A package that exports names on first use (recsys.lazy) must not have a submodule of
    the same name: importing the submodule would make the package's attribute the module,
    and `from package import name` would hand out the module instead of the function."""
    import importlib
    import pkgutil

    module = importlib.import_module(package)
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    assert not set(module._HOME) & submodules
    assert set(module._HOME) <= set(module.__all__)
    for name in module._HOME:
        assert getattr(module, name) is not None
