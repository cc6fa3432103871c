"""The package layout: pipeline's sub-packages import downwards only, and detectors / trackers / fusion
never import pipeline (they take arrays and tensors, not frames from a source)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. A module may import its own layer and the layers below it, never one above.
LAYERS = [
    {"pipeline", "pipeline.types", "pipeline.errors", "pipeline.config"},
    {"pipeline.io"},
    {"pipeline.geometry"},
    {"pipeline.synth", "pipeline.evaluation"},
    {"pipeline.runner", "pipeline.stages", "pipeline.fusion_stage", "pipeline.models", "pipeline.settings"},
    {"pipeline.training"},
    {"pipeline.process", "pipeline.batch", "pipeline.cli"},
]


def unit(module: str) -> str:
    """The layout unit a dotted module name belongs to: a sub-package, or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer(module: str) -> int:
    u = unit(module)
    for i, names in enumerate(LAYERS):
        if u in names:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layout.py: place it there")


def imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pipeline":
                out += [(node.lineno, f"pipeline.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def test_pipeline_imports_point_downwards():
    bad = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        me = module_name(path)
        for line, target in imports(path):
            if target.split(".")[0] != "pipeline" or unit(target) == unit(me):
                continue
            if layer(target) > layer(me):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target} (layer {layer(target)} > {layer(me)})")
    assert not bad, "\n".join(bad)


def test_model_packages_never_import_pipeline():
    bad = []
    for pkg in ("detectors", "trackers", "fusion"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            bad += [f"{path.relative_to(ROOT)}:{line} imports {t}" for line, t in imports(path)
                    if t.split(".")[0] == "pipeline"]
    assert not bad, "\n".join(bad)


def test_every_pipeline_module_has_a_layer():
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        layer(module_name(path))


def test_layer_check_catches_an_upward_import(tmp_path):
    """The checker itself: an io module importing the CLI is reported."""
    f = tmp_path / "x.py"
    f.write_text("def f():\n    from pipeline.cli import main\n")
    found = [t for _, t in imports(f)]
    assert found == ["pipeline.cli"] and layer("pipeline.cli") > layer("pipeline.io.sources")
