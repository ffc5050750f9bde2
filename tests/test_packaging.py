"""A non-editable install serves the demo page and its assets: the wheel carries the
``templates/`` and ``static/`` folders (mapped into the package by ``setup.cfg``) and
``py.typed``, and the demo app works from the unpacked wheel alone.

Contract lines pinned: "`GET /` | demo app only: the page with EventSource ..." and the
browser helper `/sse-flask.js`, from an installed package rather than the source tree;
STYLE's "ship `py.typed`" and the `sse-flask` entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import typing as t
import zipfile
from pathlib import Path

ASSETS = [
    "sse_flask/templates/index.html",
    "sse_flask/static/demo.js",
    "sse_flask/static/demo.css",
    "sse_flask/static/sse-flask.js",
    "sse_flask/py.typed",
]


def test_wheel_contents(wheel: tuple[Path, Path]) -> None:
    """The wheel holds every module of the package, the page, its assets, py.typed and the command."""
    built, source = wheel
    with zipfile.ZipFile(built) as archive:
        names = set(archive.namelist())
        entry_points = next(
            archive.read(name).decode()
            for name in names
            if name.endswith(".dist-info/entry_points.txt")
        )
    assert [name for name in ASSETS if name not in names] == []
    modules = {path.relative_to(source).as_posix() for path in (source / "sse_flask").rglob("*.py")}
    assert modules - names == set()
    assert not any(name.startswith(("tests/", "templates/", "static/")) for name in names), (
        "assets belong inside the package"
    )
    assert "sse-flask = sse_flask.cli:main" in entry_points


def test_unpacked_wheel_serves_the_demo(wheel: tuple[Path, Path], tmp_path: Path) -> None:
    """From the unpacked wheel alone, the demo app serves /, its static files and /sse-flask.js."""
    built, source = wheel
    site = tmp_path / "site"
    with zipfile.ZipFile(built) as archive:
        archive.extractall(site)
    code = textwrap.dedent(
        """
        import json, re, sys
        import sse_flask
        from sse_flask.demo import create_app

        client = create_app().test_client()
        answers = {}

        def get(path):
            response = client.get(path)
            answers[path] = [response.status_code, response.mimetype, response.get_data(as_text=True)]
            response.close()

        get("/")
        # every asset the page links to, and the fixed ones
        linked = re.findall(r'(?:href|src)="(/[^"#]*)"', answers["/"][2])
        for path in [*linked, "/static/demo.js", "/static/demo.css", "/sse-flask.js"]:
            get(path)
        print(json.dumps({"file": sse_flask.__file__, "linked": linked, "answers": answers}))
        """
    )
    environ = {key: value for key, value in os.environ.items() if not key.startswith("SSE_")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, t.Any] = json.loads(result.stdout)
    assert Path(report["file"]).resolve().is_relative_to(site.resolve()), (
        f"imported {report['file']}, not the wheel"
    )
    answers = report["answers"]
    assert {path: answer[0] for path, answer in answers.items()} == dict.fromkeys(answers, 200)
    assert (
        answers["/"][1] == "text/html"
        and "/static/demo.js" in report["linked"]
        and "/static/demo.css" in report["linked"]
    )
    assert answers["/static/demo.js"][1] == answers["/sse-flask.js"][1] == "text/javascript"
    assert answers["/static/demo.css"][1] == "text/css"
    shipped = {
        "/static/demo.js": "static/demo.js",
        "/static/demo.css": "static/demo.css",
        "/sse-flask.js": "static/sse-flask.js",
    }
    for path, asset in shipped.items():
        assert answers[path][2] == (source / asset).read_text(encoding="utf-8"), (
            f"{path} is not the shipped {asset}"
        )
