"""Where the package's ``templates/`` and ``static/`` folders are.

They are top-level folders of the source tree, installed as ``sse_flask/templates`` and
``sse_flask/static`` by the ``package_dir`` mapping in ``setup.cfg``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["resource_dir"]


def resource_dir(name: str) -> str:
    """The folder ``name`` (``templates`` or ``static``): inside the package when installed
    from a wheel, beside it in a source checkout or an editable install."""
    package = Path(__file__).resolve().parent
    for folder in (package / name, package.parent / name):
        if folder.is_dir():
            return str(folder)
    raise RuntimeError(
        f"the folder {name!r} of sse_flask is missing; reinstall with 'pip install sse-flask'"
    )
