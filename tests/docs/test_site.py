"""The docs site builds with `mkdocs build --strict`: no broken link, missing anchor or page left out."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from docblocks import REPO

NEEDED = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def test_site_builds_strict(tmp_path):
    missing = [name for name in NEEDED if importlib.util.find_spec(name.split(".")[0]) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed: the docs tools come with pip install -e '.[dev]'")
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for page in ("index.html", "concepts/index.html", "tutorials/retrieval/index.html",
                 "reference/config/index.html", "reference/cli/index.html", "results/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference/api/index.html").read_text()
    assert "LoadedModel" in api and "retrieve" in api  # mkdocstrings rendered the API from the docstrings
