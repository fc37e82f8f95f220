"""Sphinx configuration for the flask-basic-gate docs (Pallets theme)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version

from pallets_sphinx_themes import ProjectLink

# -- Project ------------------------------------------------------------------

project = "flask-basic-gate"
copyright = "2025, the flask-basic-gate authors"
author = "the flask-basic-gate authors"
try:
    # The one version: flask_basic_gate.__version__, which setup.cfg reads.
    release = distribution_version("flask-basic-gate")
except PackageNotFoundError:  # building from a tree that is not installed
    from flask_basic_gate import __version__ as release
version = ".".join(release.split(".")[:2])

# -- General ------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "pallets_sphinx_themes",
]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
exclude_patterns = ["_build"]
# The docs are built offline (tox -e docs, CI): no intersphinx inventories.

# -- HTML ---------------------------------------------------------------------

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_context = {
    "project_links": [
        ProjectLink("Changes", "changes.html"),
        ProjectLink("Coming from the gateway", "gateway.html"),
    ]
}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["project.html", "localtoc.html"]}
html_static_path = ["_static"]
html_title = f"flask-basic-gate Documentation ({version})"
html_show_sourcelink = False
