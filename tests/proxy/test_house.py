"""The house rule on the hot path (issue 20, point 2): no function takes more than five parameters.

A request's pieces travel together in one object (`Exchange` through the pipeline, `Outbound` and
the transport's per-call `_Call` on the wire, `Hosted` and `Setup` in the server), not from hand
to hand. This walks the hot path's modules (`proxy/app.py`, `proxy/worker.py`, `proxy/pipeline/**.py`,
`proxy/http/*.py`) with `ast` and names every function or method over the limit. A method's
`self` or `cls` is not counted; positional, keyword-only, `*args` and `**kwargs` parameters are.

Nothing is excluded today: the signatures a third party dictates all fit (ASGI's `(scope,
receive, send)`, Hypercorn's `TCPServer(app, config, context, state, stream)` that
`server.install()`'s factory takes, httpx's `handle_async_request(request)`, httptools'
callbacks). One that some day does not goes in `DICTATED`, saying who dictates it; an entry that
no longer exists or no longer needs it fails the test, so the list cannot go stale.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_PARAMETERS = 5
# "path:Qualified.name" -> the third party whose signature it must keep.
DICTATED: dict[str, str] = {}


def hot_path_files() -> list[Path]:
    return [
        ROOT / "proxy" / "app.py",
        ROOT / "proxy" / "worker.py",
        *sorted((ROOT / "proxy" / "pipeline").rglob("*.py")),
        *sorted((ROOT / "proxy" / "http").glob("*.py")),
    ]


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    """The parameters `node` takes, without a method's `self` or `cls` (`method`: defined directly
    in a class body, and not a staticmethod)."""
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args)]
    if method and names:
        names = names[1:]
    names += [a.arg for a in args.kwonlyargs]
    names += [f"*{a.arg}" for a in (args.vararg, args.kwarg) if a is not None]
    return names


def functions(tree: ast.AST) -> list[tuple[str, int, list[str]]]:
    """(qualified name, line, parameters) of every function and method in `tree`, nested ones too."""
    found: list[tuple[str, int, list[str]]] = []

    def visit(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in child.decorator_list)
                found.append((f"{prefix}{child.name}", child.lineno, parameters(child, in_class and not static)))
                visit(child, f"{prefix}{child.name}.", False)
            else:
                visit(child, prefix, in_class)

    visit(tree, "", False)
    return found


def over_the_limit() -> dict[str, str]:
    """Every hot-path function over `MAX_PARAMETERS`: "path:name" -> "path:line name (n: a, b, ...)"."""
    over = {}
    for path in hot_path_files():
        relative = path.relative_to(ROOT).as_posix()
        for name, line, names in functions(ast.parse(path.read_text(), filename=str(path))):
            if len(names) > MAX_PARAMETERS:
                over[f"{relative}:{name}"] = f"{relative}:{line} {name} ({len(names)}: {', '.join(names)})"
    return over


def test_no_hot_path_function_takes_more_than_five_parameters() -> None:
    over = over_the_limit()
    offenders = [text for key, text in sorted(over.items()) if key not in DICTATED]
    assert not offenders, (
        f"{len(offenders)} hot-path function(s) take more than {MAX_PARAMETERS} parameters; give the pieces "
        "that travel together one object (issue 20, point 2):\n  " + "\n  ".join(offenders)
    )
    stale = sorted(set(DICTATED) - set(over))
    assert not stale, f"DICTATED entries that are gone or within the limit now (remove them): {stale}"


def test_the_walk_covers_the_hot_path() -> None:
    """The walk reads the files that matter: a moved or renamed room would otherwise pass by reading nothing."""
    files = hot_path_files()
    assert all(path.is_file() for path in files)
    seen = {
        f"{path.relative_to(ROOT).as_posix()}:{name}"
        for path in files
        for name, _, _ in functions(ast.parse(path.read_text()))
    }
    for expected in (
        "proxy/http/transport.py:LectrTransport.open",
        "proxy/http/transport.py:_ResponseStream.__init__",
        "proxy/http/server.py:serve_connection",
        "proxy/http/server.py:Connection.__init__",
        "proxy/pipeline/relay.py:Relay.run",
    ):
        assert expected in seen, f"{expected} not found by the walk"
    assert any(key.startswith("proxy/pipeline/providers/") for key in seen), "the walk misses proxy/pipeline/**"
    assert any(key.startswith("proxy/app.py:") for key in seen)


SAMPLE = """
def free(a, b, c, d, e, f): ...
async def keywords(a, b, *, c, d, e, f): ...
def starred(a, b, c, d, *args, **kwargs): ...
def fits(a, b, c, d, e): ...
class Thing:
    def method(self, a, b, c, d, e): ...
    def wide(self, a, b, c, d, e, f): ...
    @classmethod
    def make(cls, a, b, c, d, e): ...
    @staticmethod
    def static(a, b, c, d, e, f): ...
    def outer(self):
        def inner(self, a, b, c, d, e): ...
"""


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("free", 6),
        ("keywords", 6),
        ("starred", 6),
        ("fits", 5),
        ("Thing.method", 5),
        ("Thing.wide", 6),
        ("Thing.make", 5),
        ("Thing.static", 6),
        ("Thing.outer.inner", 6),  # a nested function's first parameter is not a method's self
    ],
)
def test_the_count(name: str, count: int) -> None:
    counted = {qualified: len(names) for qualified, _, names in functions(ast.parse(SAMPLE))}
    assert counted[name] == count
