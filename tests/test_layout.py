"""The package's shape: no import cycle among its modules, no module over 500 lines, and no
module on the delivery path writing another object's attributes; and the tests' shape: what
they share is in ``tests/helpers``, not in conftest or a test module.

STYLE's "One concern per module, each under about 500 lines, and no import cycles (a
function-local import that dodges one is still one)". Every ``import`` and ``from ... import``
statement counts, wherever it stands: at the top, in a function, or under
``t.TYPE_CHECKING``.

On the delivery path (broker, fan-out, stream, worker), an object's state changes only
through its own methods: a class may assign to ``self``'s (or ``cls``'s) attributes, no one
else's, so that :class:`~sse_flask.broker.fanout.Subscription` and its peers stay the only
code that knows how their state moves.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "sse_flask"
MAX_LINES = 500
#: The modules an event goes through from a publish to the client's socket.
DELIVERY_PATH = ("broker/*.py", "stream.py", "viewstream.py", "worker.py")
#: Attributes of other objects that the delivery path sets, by module: each belongs to a
#: framework's object that offers no method for it.
FOREIGN_WRITES = {
    ("sse_flask.stream", "content_encoding"): "werkzeug's Response sets the header through it",
    ("sse_flask.viewstream", "status_code"): "werkzeug's Response, made by jsonify(), has no "
    "other way to change its status",
    ("sse_flask.worker", "sent"): "gunicorn's Response counts what went out for the access "
    "log; the worker's writer sends past it",
    ("sse_flask.worker", "Pool"): "gunicorn's gevent worker makes its pools from the name in its "
    "module; the worker's run() points it at its own pool class",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that the module at ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else node.module or base
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {module for module in found if module in modules and module != name}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imports_of(path, modules) for path in paths}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``edges``, as the list of modules along it, or ``None``."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> list[str] | None:
        if module in visiting:
            return [*visiting[visiting.index(module) :], module]
        if module in done:
            return None
        visiting.append(module)
        for target in sorted(edges[module]):
            if found := visit(target):
                return found
        visiting.pop()
        done.add(module)
        return None

    for module in sorted(edges):
        if found := visit(module):
            return found
    return None


def test_no_import_cycle() -> None:
    # A package __init__ that re-exports is imported by everything below it: leave out the
    # edges into a parent package, which run no code of the child's.
    edges = {
        module: {target for target in targets if not module.startswith(f"{target}.")}
        for module, targets in graph().items()
    }
    assert cycle(edges) is None, " -> ".join(cycle(edges) or [])


def test_cycle_finder_sees_a_function_local_import() -> None:
    assert cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_over_500_lines() -> None:
    sizes = {
        module_name(path): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {name: size for name, size in sizes.items() if size > MAX_LINES} == {}


def foreign_writes(source: str) -> list[tuple[str, int]]:
    """The attributes that ``source`` assigns, augments, deletes or ``setattr``s on an object
    other than ``self`` or ``cls``, with their lines."""
    targets: list[ast.expr] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.Delete)):
            targets.extend(node.targets)
        elif isinstance(
            node, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor, ast.comprehension)
        ):
            targets.append(node.target)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            targets.extend(item.optional_vars for item in node.items if item.optional_vars)
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in {"setattr", "delattr", "object.__setattr__"}
            and node.args
        ):
            name = node.args[1] if len(node.args) > 1 else None
            attribute = name.value if isinstance(name, ast.Constant) else "?"
            targets.append(ast.Attribute(node.args[0], str(attribute), lineno=node.lineno))
    found = []
    while targets:
        target = targets.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
        elif isinstance(target, ast.Attribute) and not (
            isinstance(target.value, ast.Name) and target.value.id in {"self", "cls"}
        ):
            found.append((target.attr, target.lineno))
    return sorted(found, key=lambda write: write[1])


def test_the_delivery_path_writes_no_other_objects_attributes() -> None:
    paths = sorted({path for pattern in DELIVERY_PATH for path in PACKAGE.glob(pattern)})
    writes = [
        (module_name(path), attribute, line)
        for path in paths
        for attribute, line in foreign_writes(path.read_text(encoding="utf-8"))
    ]
    unexpected = [
        f"{module}:{line} sets .{attribute}"
        for module, attribute, line in writes
        if (module, attribute) not in FOREIGN_WRITES
    ]
    assert unexpected == [], f"give the object's class a method for it: {unexpected}"
    stale = set(FOREIGN_WRITES) - {(module, attribute) for module, attribute, _ in writes}
    assert stale == set(), f"no longer written, drop from FOREIGN_WRITES: {stale}"


def test_foreign_writes_finds_every_kind_of_write() -> None:
    source = """
def f(self, sub, items):
    self.a = cls.b = 1
    self.c.d = 2
    sub.e += 1
    sub.f: int = 1
    first, (sub.g, self.h) = 1, (2, 3)
    del sub.i
    for sub.j in items: pass
    with open(items) as sub.k: pass
    [0 for sub.l in items]
    setattr(sub, "m", 1)
    object.__setattr__(sub, "n", 1)
"""
    assert [attribute for attribute, _ in foreign_writes(source)] == list("defgijklmn")


def imports_of_tests(source: str) -> list[str]:
    """The modules that ``source`` imports, anywhere in it, that are conftest or a test
    module (each ``from`` target; with ``from . import``, the names)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.extend([node.module] if node.module else [alias.name for alias in node.names])
    return [
        name
        for name in found
        if any(part == "conftest" or part.startswith("test_") for part in name.split("."))
    ]


def test_no_test_imports_conftest_or_another_test_module() -> None:
    """What tests share lives in ``tests/helpers``: conftest holds fixtures, which pytest
    hands out, and a test module is pytest's to import, once."""
    offenders = {
        str(path.relative_to(TESTS)): names
        for path in sorted(TESTS.rglob("*.py"))
        if "node_modules" not in path.parts
        and (names := imports_of_tests(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_test_import_finder_sees_conftest_and_test_modules() -> None:
    source = "def f():\n    from conftest import x\nimport tests.test_a\nfrom . import test_b\n"
    assert sorted(imports_of_tests(source)) == ["conftest", "test_b", "tests.test_a"]
    assert imports_of_tests("from helpers.sse import RawStream\nimport contest\n") == []


def test_architecture_draws_the_module_graph_as_it_is() -> None:
    """ARCHITECTURE.md's module graph: one line per module with what it imports, each module
    above everything it imports, exactly as the code has it."""
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("## The module graph", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    drawn: dict[str, set[str]] = {}
    order: list[str] = []
    for line in filter(None, block.splitlines()):
        module, _, listed = line.partition("->")
        order.append(module.strip())
        drawn[module.strip()] = {target.strip() for target in listed.split(",") if target.strip()}

    def short(module: str) -> str:
        return module if module == "sse_flask" else module.removeprefix("sse_flask.")

    actual = {
        short(module): {short(target) for target in targets if not module.startswith(f"{target}.")}
        for module, targets in graph().items()
    }
    assert drawn == actual
    for module, imported in drawn.items():
        below = order[order.index(module) + 1 :]
        assert imported <= set(below), f"{module} imports a module drawn above it"
