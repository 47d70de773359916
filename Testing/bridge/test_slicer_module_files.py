"""The parts of the Slicer module that only a real Slicer loads (the widget, the .ui file, the
CMake files), checked statically: what the widget uses exists, every bound widget can show its
parameter's type, the build lists every file, and imports stay within the rules."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ElementTree

import pytest
from bridge_support import REPO
from ReCoKDSegmentLib.compatibility import MINIMUM_SLICER

MODULE_DIR = REPO / "ReCoKDSegment"
MODULE_SCRIPT = MODULE_DIR / "ReCoKDSegment.py"
LIB_DIR = MODULE_DIR / "ReCoKDSegmentLib"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "ReCoKDSegment.ui"

# Widget class each parameter type needs (slicer.parameterNodeWrapper.guiConnectors).
CONNECTORS = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "str": {"QLineEdit", "QTextEdit"},
    "str+Choice": {"QComboBox"},
    "Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},
}


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_SCRIPT.read_text())


@pytest.fixture(scope="module")
def ui_widgets() -> dict[str, ElementTree.Element]:
    root = ElementTree.parse(UI_FILE).getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}


def parameter_fields(tree: ast.Module) -> dict[str, str]:
    """Parameter node field -> kind (a key of CONNECTORS)."""
    (node_class,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "ReCoKDSegmentParameterNode"]
    fields = {}
    for statement in node_class.body:
        if isinstance(statement, ast.AnnAssign):
            annotation = ast.unparse(statement.annotation)
            base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", annotation)
            kind = "node" if base.startswith("vtkMRML") else base
            if kind == "str" and "Choice(" in annotation:
                kind = "str+Choice"
            fields[statement.target.id] = kind
    return fields


def test_widgets_used_by_the_module_exist_in_the_ui_file(module_tree, ui_widgets):
    used = {
        node.attr
        for node in ast.walk(module_tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
    }
    assert used, "the widget uses no ui element?"
    assert used <= set(ui_widgets), f"missing in {UI_FILE.name}: {sorted(used - set(ui_widgets))}"


def test_bound_widgets_match_their_parameter_types(module_tree, ui_widgets):
    fields = parameter_fields(module_tree)
    bound = {}
    for name, widget in ui_widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = (name, widget.get("class"))
    assert bound
    for parameter, (widget_name, widget_class) in bound.items():
        assert parameter in fields, f"{widget_name} is bound to unknown parameter {parameter!r}"
        assert widget_class in CONNECTORS[fields[parameter]], (
            f"{widget_name} ({widget_class}) cannot show {parameter}: {fields[parameter]}")
    # Unbound parameters are set by the widget code itself.
    assert set(fields) - set(bound) == {"model", "resultSegmentation"}


def test_scene_reaches_every_node_selector(ui_widgets):
    root = ElementTree.parse(UI_FILE).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {name for name, widget in ui_widgets.items() if widget.get("class") == "qMRMLNodeComboBox"}
    assert selectors and selectors == receivers


def test_cmake_lists_every_script_and_resource():
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    listed = set(re.findall(r"\$\{MODULE_NAME\}Lib/(\w+\.py)", cmake))
    assert listed == {path.name for path in LIB_DIR.glob("*.py")}
    resources = re.search(r"set\(MODULE_PYTHON_RESOURCES(.*?)\)", cmake, re.DOTALL).group(1)
    for resource in re.findall(r"Resources/\S+", resources):
        assert (MODULE_DIR / resource.replace("${MODULE_NAME}", "ReCoKDSegment")).is_file(), resource
    assert "WITH_GENERIC_TESTS" in cmake and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake


def test_extension_cmake_declares_the_metadata():
    cmake = (REPO / "CMakeLists.txt").read_text()
    for field in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert re.search(rf'set\(EXTENSION_{field} "[^"]+"\)', cmake), field
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in cmake
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    assert "add_subdirectory(ReCoKDSegment)" in cmake
    assert (REPO / "Resources" / "Icons" / "ReCoKD.png").is_file()
    assert "cmake_minimum_required(VERSION 3.20.6...3.22.6 FATAL_ERROR)" in cmake  # the Slicer 5.10 template's
    floor = ".".join(str(part) for part in MINIMUM_SLICER)
    assert f"Requires Slicer {floor} or newer." in cmake and f"Supported Slicer versions: {floor} and newer" in (
        REPO / "README.md").read_text()
    for url in re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', cmake).group(1).split():
        path = REPO / url.split("/main/", 1)[1]
        assert path.is_file() and path.parent == REPO / "Resources" / "Screenshots", url
    assert "rendered with Qt outside Slicer" in (REPO / "README.md").read_text()  # the screenshots' caption


STUB_SLICER = """
cmake_minimum_required(VERSION 3.20.6...3.22.6)
project(StubSlicerBuild NONE)
# What the module's CMakeLists takes from Slicer; the macros' own work (compiling, ctest) is not under test.
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
macro(slicerMacroBuildScriptedModule)
endmacro()
macro(slicer_add_python_unittest)
endmacro()
add_subdirectory(ReCoKDSegment)
"""


def test_cmake_stages_the_training_package_and_models_and_restages_an_edit(tmp_path):
    """The module's CMakeLists, configured and built with a stub Slicer: the build tree gets the
    recokd package and the shipped models (no caches), and a later edit reaches it at the next build."""
    import shutil
    import subprocess

    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    source = tmp_path / "source"
    shutil.copytree(MODULE_DIR, source / "ReCoKDSegment", ignore=shutil.ignore_patterns("__pycache__"))
    training = REPO / "ReCoKDTraining"
    (source / "ReCoKDTraining" / "recokd").mkdir(parents=True)
    shutil.copy(training / "pyproject.toml", source / "ReCoKDTraining")
    shutil.copy(training / "recokd" / "__init__.py", source / "ReCoKDTraining" / "recokd")
    (source / "ReCoKDTraining" / "recokd" / "__pycache__").mkdir()
    (source / "ReCoKDTraining" / "recokd" / "__pycache__" / "x.pyc").write_bytes(b"")
    (source / "ReCoKDTraining" / "recokd.egg-info").mkdir()
    (source / "ReCoKDTraining" / "recokd.egg-info" / "PKG-INFO").write_text("stale")
    (source / "Resources" / "Models").mkdir(parents=True)
    (source / "Resources" / "Models" / "tiny.recokd.zip").write_bytes(b"zip")
    (source / "Resources" / "Models" / "notes.txt").write_text("not a model")
    (source / "CMakeLists.txt").write_text(STUB_SLICER)
    build = tmp_path / "build"

    def run(*args: str) -> None:
        result = subprocess.run([cmake, *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr

    run("-S", str(source), "-B", str(build))
    run("--build", str(build))
    staged = build / "lib" / "Slicer" / "qt-scripted-modules"
    files = sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file())
    assert files == ["ReCoKDModels/tiny.recokd.zip", "ReCoKDTraining/pyproject.toml",
                     "ReCoKDTraining/recokd/__init__.py"]

    edited = source / "ReCoKDTraining" / "recokd" / "__init__.py"
    edited.write_text(edited.read_text() + "\n# edited after the first build\n")
    (source / "ReCoKDTraining" / "recokd" / "added.py").write_text("ADDED = True\n")
    run("--build", str(build))
    assert (staged / "ReCoKDTraining" / "recokd" / "__init__.py").read_text() == edited.read_text()
    assert (staged / "ReCoKDTraining" / "recokd" / "added.py").is_file()


def test_reload_covers_every_lib_module(module_tree):
    (assignment,) = [n for n in module_tree.body if isinstance(n, ast.Assign) and n.targets[0].id == "LIB_MODULES"]
    assert set(ast.literal_eval(assignment.value)) == {p.stem for p in LIB_DIR.glob("*.py")} - {"__init__"}


def _file_scope(statements: list[ast.stmt]):
    """The statements that run when the file is imported: module level, and inside module-level ``if``s."""
    for node in statements:
        yield node
        if isinstance(node, ast.If):
            yield from _file_scope(node.body + node.orelse)


def top_level_imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in _file_scope(tree.body):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
    return names


def test_module_script_imports_only_slicer_and_the_standard_library_at_file_scope(module_tree):
    allowed_roots = {"qt", "slicer", "vtk", "ReCoKDSegmentLib"} | set(sys.stdlib_module_names)
    imports = top_level_imports(module_tree)
    assert {name.split(".")[0] for name in imports} <= allowed_roots
    # Lib modules loaded at start-up must stay light (numpy and SimpleITK load on first use).
    for name in {n for n in imports if n.startswith("ReCoKDSegmentLib.")}:
        lib_imports = top_level_imports(ast.parse((LIB_DIR / f"{name.split('.')[1]}.py").read_text()))
        heavy = {i for i in lib_imports if i.split(".")[0] in {"numpy", "SimpleITK", "vtk", "slicer"}}
        assert not heavy, f"{name} imports {heavy} at file scope"


@pytest.mark.parametrize("path", sorted(LIB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_lib_never_imports_qt_recokd_or_torch(path):
    forbidden = {"qt", "ctk", "recokd", "torch", "PythonQt", "nnunetv2"}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots = {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots = {node.module.split(".")[0]}
        else:
            continue
        assert not roots & forbidden, f"{path.name} imports {roots & forbidden}"
