"""Every module imports, the floors read bottom-up (foundation -> stages -> rooms -> app), stages do not import
or start each other, and `densedpo --help` loads no heavy package."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

FOUNDATION = "densedpo"
STAGES = ["labeler", "generation", "dpo", "scorers"]
ROOMS = ["service", "review", "evaluation", "sources"]  # floor 3: apps built on a stage
APP = "app"
PACKAGES = [FOUNDATION, *STAGES, *ROOMS, APP]


def modules():
    for pkg in PACKAGES:
        yield pkg
        for m in pkgutil.walk_packages([str(REPO / pkg)], prefix=f"{pkg}."):
            yield m.name


def _imports(path, name: str) -> bool:
    return bool(re.search(rf"^\s*(import|from)\s+{name}\b", path.read_text(), re.M))


@pytest.mark.parametrize("name", list(modules()))
def test_module_imports(name):
    importlib.import_module(name)


def test_every_package_is_checked():
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")} - {"tests"}
    assert packages == set(PACKAGES), packages ^ set(PACKAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_stages_do_not_import_or_start_each_other(stage):
    others = [s for s in STAGES if s != stage]
    for path in (REPO / stage).rglob("*.py"):
        text = path.read_text()
        for other in others:
            assert not _imports(path, other), (path, other)
            # a stage may not start another stage's module either (`python -m scorers.server`): the app names it
            assert not re.search(rf"""["']-m["'],\s*["']{other}[.\w]*["']""", text), (path, other)


def test_floors_read_bottom_up():
    """The foundation imports no stage, room or app; stages import no room or app; rooms no app, nor each other."""
    above = {
        FOUNDATION: STAGES + ROOMS + [APP],
        **{stage: ROOMS + [APP] for stage in STAGES},
        **{room: [APP] + [r for r in ROOMS if r != room] for room in ROOMS},
    }
    for floor, forbidden in above.items():
        for path in (REPO / floor).rglob("*.py"):
            for name in forbidden:
                assert not _imports(path, name), (path, name)


@pytest.mark.parametrize("folder", ["labeler", "service", "review"])
def test_labeling_side_never_imports_torch_or_diffusers(folder):
    pattern = re.compile(r"^\s*(import|from)\s+(torch|diffusers|transformers)\b", re.M)
    for path in (REPO / folder).rglob("*.py"):
        assert not pattern.search(path.read_text()), path


def test_help_imports_no_heavy_package():
    code = (
        "import sys; from app.cli import app; from typer.testing import CliRunner; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'diffusers', 'vllm', 'transformers', 'httpx', 'cv2') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def _source_files():
    for pkg in PACKAGES:
        yield from sorted((REPO / pkg).rglob("*.py"))


def test_every_file_says_what_it_is_for():
    import ast

    missing = [str(p.relative_to(REPO)) for p in _source_files() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"files without an opening docstring: {missing}"


def test_no_function_over_80_lines():
    """Bodies only (a typer command's option table is its signature); tests and benchmarks are exempt."""
    import ast

    long = []
    for path in _source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.body[0].lineno + 1
                if lines > 80:
                    long.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
    assert not long, long
