"""docs/operations.md carries a configuration reference generated from the settings classes;
it must be exactly what scripts/gen_config_reference.py makes of the code today."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.deploy.support import REPO, SERVICES, env_names, settings_class

pytestmark = pytest.mark.unit

SCRIPT = REPO / "scripts" / "gen_config_reference.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed_block(generator: ModuleType, doc: Path) -> str:
    text = doc.read_text(encoding="utf-8")
    start, stop = text.index(generator.BEGIN), text.index(generator.END)
    return text[start : stop + len(generator.END)]


def test_committed_reference_is_what_the_code_generates(generator: ModuleType) -> None:
    assert committed_block(generator, generator.DOC) == generator.render(), (
        "docs/operations.md is stale: run `uv run python scripts/gen_config_reference.py`"
    )


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_setting_is_in_the_reference_with_its_description(
    generator: ModuleType, service: str
) -> None:
    cls = settings_class(service)
    block = generator.render()
    for env in env_names(cls):
        [row] = [line for line in block.splitlines() if line.startswith(f"| `{env}` |")]
        description = row.rstrip(" |").rsplit("|", 1)[-1].strip()
        assert description, f"{env} has no docstring in {cls.__name__}"


def test_check_mode_fails_on_a_stale_doc_and_the_rewrite_fixes_it(
    generator: ModuleType, tmp_path: Path
) -> None:
    doc = tmp_path / "operations.md"
    doc.write_text(f"# Ops\n\n{generator.BEGIN}\nold\n{generator.END}\n\nafter\n")
    assert generator.main(["--check", "--doc", str(doc)]) == 1
    assert generator.main(["--doc", str(doc)]) == 0
    assert generator.main(["--check", "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Ops\n\n") and text.endswith("\n\nafter\n")
    assert "`JOBSPRINT_KAFKA_BOOTSTRAP`" in text
