"""Sphinx configuration for sse-flask's documentation, in the Pallets style."""

from __future__ import annotations

import sse_flask

project = "sse-flask"
copyright = "2026, the sse-flask developers"
version = release = sse_flask.__version__

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "pallets_sphinx_themes",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True
myst_heading_anchors = 3
# The Pallets theme registers domains (click, jinja) that myst asks about every link.
suppress_warnings = ["myst.domains"]

html_theme = "flask"
html_title = f"sse-flask Documentation ({version})"
html_context = {"project_links": []}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
html_show_sourcelink = False
