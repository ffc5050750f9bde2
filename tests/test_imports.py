"""What importing sse_flask costs and exposes: no redis, gevent or gunicorn on import, a
sorted ``__all__`` of names that exist, and ``python -m sse_flask --version``.

Contract lines pinned: "The frame encoder is public too (`sse_flask.Event`, and a function to
encode one)", the `sse-flask` command, and STYLE's "Test that `import sse_flask` loads no
redis, gevent or gunicorn" (the in-process broker must work without them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sse_flask

HEAVY = ("redis", "gevent", "gunicorn", "greenlet")
REPO = Path(__file__).resolve().parent.parent


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter, outside the repo; return its standard output."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO.parent,
        # Not measured by coverage: its greenlet support imports greenlet, which is the point.
        env={k: v for k, v in os.environ.items() if not k.startswith(("SSE_", "COVERAGE_"))},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize(
    "statement",
    [
        "import sse_flask",
        "from sse_flask import SSE, Event, encode_event",
        "import sse_flask.broker, sse_flask.events, sse_flask.config, sse_flask.stream, sse_flask.extension",
        # The command line: say and listen need nothing of gunicorn, and serve loads it late.
        "import sse_flask.cli, sse_flask.client, sse_flask.serving",
    ],
)
def test_import_loads_no_heavy_dependency(statement: str) -> None:
    """Importing sse_flask loads none of redis, gevent, gunicorn (nor greenlet)."""
    loaded = run_python(
        f"""
        import json, sys
        {statement}
        heavy = {HEAVY!r}
        print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in heavy)))
        """
    )
    assert json.loads(loaded) == []


def test_in_process_use_loads_no_heavy_dependency() -> None:
    """Setting up an app with the in-process broker, publishing and serving /say load none of them either."""
    loaded = run_python(
        f"""
        import json, sys
        from flask import Flask
        from sse_flask import SSE
        app = Flask(__name__)
        app.config["SSE_OPEN_PUBLISH"] = True
        sse = SSE(app)
        sse.publish({{"x": 1}})
        assert app.test_client().get("/say?msg=hi").status_code == 200
        heavy = {HEAVY!r}
        print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in heavy)))
        """
    )
    assert json.loads(loaded) == []


def test_all_is_sorted_and_exists() -> None:
    """``sse_flask.__all__`` is sorted, has no duplicates, and names only what exists."""
    assert sse_flask.__all__ == sorted(set(sse_flask.__all__))
    missing = [name for name in sse_flask.__all__ if not hasattr(sse_flask, name)]
    assert missing == []


def test_public_names() -> None:
    """The extension, the encoder and the exceptions are exported from the package."""
    expected = {"SSE", "Event", "encode_event", "encode_comment"}
    expected |= {
        "SSEError",
        "ConfigError",
        "InvalidInput",
        "InvalidChannel",
        "DataTooLarge",
        "BrokerUnavailable",
    }
    assert expected <= set(sse_flask.__all__)


def test_star_import() -> None:
    """``from sse_flask import *`` gives exactly ``__all__``."""
    namespace: dict[str, object] = {}
    exec("from sse_flask import *", namespace)
    assert sorted(name for name in namespace if name != "__builtins__") == sse_flask.__all__


def test_exceptions_tree() -> None:
    """Every exception derives from SSEError; bad input and settings are also ValueErrors."""
    assert issubclass(sse_flask.ConfigError, (sse_flask.SSEError, ValueError))
    assert issubclass(sse_flask.InvalidChannel, sse_flask.InvalidInput)
    assert issubclass(sse_flask.DataTooLarge, sse_flask.InvalidInput)
    assert issubclass(sse_flask.InvalidInput, ValueError) and issubclass(
        sse_flask.InvalidInput, sse_flask.SSEError
    )
    assert issubclass(sse_flask.BrokerUnavailable, sse_flask.SSEError) and not issubclass(
        sse_flask.BrokerUnavailable, ValueError
    )


@pytest.mark.parametrize(
    "module",
    [
        "sse_flask",
        "sse_flask.events",
        "sse_flask.config",
        "sse_flask.errors",
        "sse_flask.broker",
        "sse_flask.broker.memory",
        "sse_flask.broker.fanout",
        "sse_flask.stream",
        "sse_flask.extension",
        "sse_flask.blueprint",
        "sse_flask.demo",
        "sse_flask.resources",
    ],
)
def test_module_all_names_exist(module: str) -> None:
    """Each module's ``__all__`` names only what it defines."""
    imported = __import__(module, fromlist=["__all__"])
    assert [name for name in imported.__all__ if not hasattr(imported, name)] == []


def test_version() -> None:
    """``python -m sse_flask --version`` prints the package version."""
    result = subprocess.run(
        [sys.executable, "-m", "sse_flask", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sse-flask, version {sse_flask.__version__}"
