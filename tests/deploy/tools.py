"""External tools the deployment tests run (promtool, debootstrap, buildah): scripts/services
installs them; a missing one fails the test (never a skip), with the command that installs it."""

from __future__ import annotations

import shutil

import pytest


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is needed (scripts/services installs it: apt-get install {package})")
    return path
