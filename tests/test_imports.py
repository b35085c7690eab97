"""Every module imports, stages do not import each other, and `densedpo --help` loads no heavy package."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = ["densedpo", "labeler", "app"]
STAGES = ["labeler", "generation", "dpo", "scorers"]


def modules():
    for pkg in PACKAGES:
        yield pkg
        for m in pkgutil.iter_modules([str(REPO / pkg)]):
            yield f"{pkg}.{m.name}"


@pytest.mark.parametrize("name", list(modules()))
def test_module_imports(name):
    importlib.import_module(name)


@pytest.mark.parametrize("stage", STAGES)
def test_stages_do_not_import_each_other(stage):
    folder = REPO / stage
    if not folder.exists():
        pytest.skip(f"{stage}/ not built yet")
    others = [s for s in STAGES if s != stage]
    for path in folder.rglob("*.py"):
        text = path.read_text()
        for other in others:
            assert not re.search(rf"^\s*(import|from)\s+{other}\b", text, re.M), (path, other)


def test_floors_read_bottom_up():
    """Foundation -> stages -> app: the foundation imports no stage and no app; only the app imports the app."""
    upper = {"densedpo": STAGES + ["app"], **{stage: ["app"] for stage in STAGES}}
    for floor, forbidden in upper.items():
        for path in (REPO / floor).rglob("*.py"):
            text = path.read_text()
            for name in forbidden:
                assert not re.search(rf"^\s*(import|from)\s+{name}\b", text, re.M), (path, name)


def test_labeler_never_imports_torch_or_diffusers():
    pattern = re.compile(r"^\s*(import|from)\s+(torch|diffusers|transformers)\b", re.M)
    for path in (REPO / "labeler").rglob("*.py"):
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
