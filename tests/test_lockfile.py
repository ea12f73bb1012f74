"""Reproducible installs: the lock files pin every dependency pyproject.toml declares, at versions its
ranges allow, and `make install`, CI and the Dockerfile install from them (dependencies in a layer of
their own, before the code)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def pins(lock: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a compiled requirements file."""
    text = (ROOT / lock).read_text()
    return {
        canonicalize_name(m["name"]): m["version"]
        for m in re.finditer(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)", text, re.M)
    }


def declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(r) for r in raw]


@pytest.mark.parametrize(
    ("lock", "extras"), [("requirements.lock", [None]), ("requirements-dev.lock", [None, "dev"])]
)
def test_every_dependency_is_pinned_within_its_range(lock: str, extras: list[str | None]) -> None:
    pinned = pins(lock)
    for extra in extras:
        for requirement in declared(extra):
            name = canonicalize_name(requirement.name)
            assert name in pinned, f"{requirement} is not in {lock}: run `make lock`"
            assert requirement.specifier.contains(pinned[name], prereleases=True), (
                f"{lock} pins {name}=={pinned[name]}, outside {requirement}: run `make lock`"
            )


def test_scikit_learn_is_held_below_its_next_minor() -> None:
    (sklearn,) = [r for r in declared() if r.name == "scikit-learn"]
    upper = [s for s in sklearn.specifier if s.operator == "<"]
    assert upper, "the compiled trees read scikit-learn's private arrays: bound it from above"
    locked = pins("requirements.lock")["scikit-learn"]
    major, minor = (int(p) for p in locked.split(".")[:2])
    assert upper[0].version == f"{major}.{minor + 1}"
    lower = [s for s in sklearn.specifier if s.operator == ">="]
    assert [s.version for s in lower] == [f"{major}.{minor}"], "only the locked minor is tested"


def test_installs_come_from_the_lock_files() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install -q -r requirements-dev.lock" in makefile
    assert "pip install -q --no-deps -e ." in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # which installs through `make install`


def test_the_image_installs_dependencies_in_a_layer_before_the_code() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    step = {name: next(i for i, line in enumerate(lines) if name in line) for name in (
        "COPY requirements.lock", "pip install -r requirements.lock", "COPY pyproject.toml",
        "COPY shared", "COPY services", "pip install --no-deps .",
    )}  # fmt: skip
    assert (
        step["COPY requirements.lock"]
        < step["pip install -r requirements.lock"]
        < step["COPY pyproject.toml"]
        < step["COPY shared"]
        < step["COPY services"]
        < step["pip install --no-deps ."]
    )
