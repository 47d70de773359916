"""The module's Logic (``ReCoKDSegmentLogic`` in ``ReCoKDSegment.py``) run for real: imported
through the stand-ins of ``slicer_app_standins.py`` (Qt and the Slicer application only), on a
real MRML scene, starting the real ``recokd`` command line with a tiny untrained model package."""

from __future__ import annotations

import os
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from bridge_support import REPO, SLICER_CORE_MISSING, wait_for
from slicer_app_standins import install, load_module, parameter_values

slicer = pytest.importorskip("slicer", reason=SLICER_CORE_MISSING)
pytest.importorskip("recokd", reason="runs the real recokd command line")
sys.path.insert(0, str(REPO / "Testing" / "core"))

from ReCoKDSegmentLib.commands import DistillParameters, distill_command  # noqa: E402
from ReCoKDSegmentLib.runner import RunnerState  # noqa: E402
from ReCoKDSegmentLib.volumes import write_volume  # noqa: E402
from tiny_student import tiny_package  # noqa: E402

from recokd.package.archive import write_package  # noqa: E402

LABEL_NAMES = ["liver", "kidney"]  # tiny_student.LABELS
SEGMENT_OPTIONS = {"device": "cpu", "fast": True}


@pytest.fixture(scope="module")
def package_file(tmp_path_factory) -> Path:
    return write_package(tiny_package(), tmp_path_factory.mktemp("package") / "tiny.recokd.zip")


@pytest.fixture
def app(monkeypatch, tmp_path, scene):
    """The Slicer application stand-ins, with ``slicer.app.temporaryPath`` in an empty folder;
    ``slicer.mrmlScene`` is the real scene of the ``scene`` fixture."""
    temporary = tmp_path / "slicer-temp"
    temporary.mkdir()
    return install(monkeypatch, temporary)


@pytest.fixture
def module(app, monkeypatch):
    return load_module(monkeypatch)


@pytest.fixture
def logic(module):
    logic = module.ReCoKDSegmentLogic()
    assert logic.launcher() == [sys.executable, "-m", "recokd"], "the tests run this venv's recokd"
    yield logic
    logic.cancelAll(wait=True)


def leftovers(app) -> list[str]:
    """What the Logic left in ``slicer.app.temporaryPath``; its jobs clean up after themselves."""
    return [path.name for path in Path(app.temporaryPath).iterdir()]


def segment_names(node) -> list[str]:
    segmentation = node.GetSegmentation()
    return [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]


def test_the_standins_leave_with_the_test(tmp_path):
    """Nothing of the stand-ins outlives the test that installed them."""
    original_confirm = slicer.util.confirmOkCancelDisplay
    with pytest.MonkeyPatch.context() as monkeypatch:
        install(monkeypatch, tmp_path)
        assert load_module(monkeypatch).ReCoKDSegmentLogic
    assert not {"qt", "slicer.i18n", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule",
                "ReCoKDSegment"} & set(sys.modules)
    assert not hasattr(slicer, "app") and slicer.util.confirmOkCancelDisplay is original_confirm


def test_segment_adds_a_segmentation_named_after_the_package_labels(logic, app, scene, oblique_volume, package_file):
    before = scene.GetNumberOfNodes()

    node = logic.segment(oblique_volume, model=str(package_file), **SEGMENT_OPTIONS)

    assert node.IsA("vtkMRMLSegmentationNode") and node.GetScene() is scene
    assert node.GetName() == "Phantom segmentation"
    assert segment_names(node) == LABEL_NAMES
    assert scene.GetNumberOfNodes() > before
    assert logic.segmentRunner.state is RunnerState.DONE
    assert app.dialogs.questions == [], "recokd is up to date: nothing to ask"
    assert leftovers(app) == []


def test_start_segmentation_with_callbacks_can_replace_a_chosen_segmentation(logic, scene, oblique_volume,
                                                                             package_file):
    """The widget's way: start with callbacks, then poll (from its timer) until the run ends."""
    chosen = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "Chosen")
    chosen.GetSegmentation().AddEmptySegment("stale")
    before = scene.GetNumberOfNodes()
    states, progress = [], []

    runner = logic.startSegmentation(oblique_volume, str(package_file), outputSegmentation=chosen,
                                     onState=states.append, onProgress=progress.append, **SEGMENT_OPTIONS)
    wait_for(lambda: not logic.poll(), timeout=120)

    assert states == [RunnerState.RUNNING, RunnerState.IMPORTING, RunnerState.DONE], runner.error
    assert progress[-1].fraction == 1.0
    assert runner.output is chosen and scene.GetNumberOfNodes() == before
    assert segment_names(chosen) == LABEL_NAMES


def test_segment_files_writes_one_seg_nrrd_per_input(logic, app, oblique_volume, package_file, tmp_path):
    inputs = [write_volume(oblique_volume, tmp_path / f"{name}.nrrd") for name in ("first", "second")]

    written = logic.segmentFiles(inputs, tmp_path / "out", model=str(package_file), **SEGMENT_OPTIONS)

    assert sorted(written) == [tmp_path / "out" / "first.seg.nrrd", tmp_path / "out" / "second.seg.nrrd"]
    node = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(written[0]))
    assert storage.ReadData(node)
    assert segment_names(node) == LABEL_NAMES
    assert leftovers(app) == []


def test_add_model_installs_the_package_into_the_models_folder(logic, package_file):
    assert logic.installedModels() == []

    models = logic.addModel(package_file)

    (model,) = models
    assert model.name == "tiny-student"
    assert Path(model.path).parent == Path(os.environ["RECOKD_MODELS_DIR"]) and Path(model.path).is_file()
    assert [label.name for label in model.labels] == LABEL_NAMES
    assert logic.models == models


def test_segment_without_an_installed_model_says_what_to_do(logic, module, app, scene, oblique_volume):
    before = scene.GetNumberOfNodes()

    with pytest.raises(module.ReCoKDSegmentError, match=r"^No model is installed\. Add a model package first"):
        logic.segment(oblique_volume, **SEGMENT_OPTIONS)

    assert scene.GetNumberOfNodes() == before and leftovers(app) == []


def test_segment_with_an_unknown_model_fails_with_recokds_message(logic, module, app, scene, oblique_volume):
    before = scene.GetNumberOfNodes()

    with pytest.raises(module.ReCoKDSegmentError, match=r"^Segmentation failed: No model named 'no-such-model'"):
        logic.segment(oblique_volume, model="no-such-model", **SEGMENT_OPTIONS)

    assert scene.GetNumberOfNodes() == before and leftovers(app) == []
    assert logic.segmentRunner.state is RunnerState.FAILED


def test_an_unknown_device_is_the_modules_error_and_leaves_nothing(logic, module, app, scene, oblique_volume,
                                                                   package_file):
    before = scene.GetNumberOfNodes()

    with pytest.raises(module.ReCoKDSegmentError, match=r"^Cannot start the segmentation: .*gpu"):
        logic.segment(oblique_volume, model=str(package_file), device="gpu")

    assert scene.GetNumberOfNodes() == before and leftovers(app) == []


def test_segment_files_from_a_missing_folder_is_the_modules_error_and_leaves_nothing(logic, module, app,
                                                                                     package_file, tmp_path):
    with pytest.raises(module.ReCoKDSegmentError, match=r"^Cannot start the segmentation: input folder .* not exist"):
        logic.segmentFiles(tmp_path / "missing", tmp_path / "out", model=str(package_file))

    assert leftovers(app) == [] and not (tmp_path / "out").exists()


def test_segment_without_a_volume_is_refused_before_anything_runs(logic, module, package_file):
    with pytest.raises(module.ReCoKDSegmentError, match=r"^Choose an input volume\.$"):
        logic.segment(None, model=str(package_file))
    assert logic.segmentRunner is None


def test_dependency_status_names_the_installed_versions(logic):
    assert logic.dependencyStatus() == f"PyTorch {version('torch')}, recokd {version('recokd')}"


def test_a_forced_install_asks_first_and_cancel_installs_nothing(logic, module, app):
    with pytest.raises(module.ReCoKDSegmentError, match=r"^Installation cancelled"):
        logic.startInstall(force=True)

    ((title, question),) = app.dialogs.questions
    assert title == "Install ReCoKD dependencies" and "'recokd' and nnU-Net" in question
    assert logic.installRunner is None and leftovers(app) == []


def test_an_accepted_install_is_one_constrained_pip_step_of_a_staged_copy(logic, app):
    app.dialogs.answer = True

    (step,), finishers = logic.installSteps(force=True)

    assert step.state is RunnerState.INSTALLING
    assert step.command[:4] == [sys.executable, "-m", "pip", "install"]
    constraints, staged = Path(step.command[-2]), Path(step.command[-1].removesuffix("[openvino]"))
    assert step.command[-1].endswith("[openvino]")  # with the fast CPU runtime
    assert f"torch=={version('torch')}\n" in constraints.read_text()
    assert staged.name == "ReCoKDTraining" and (staged / "pyproject.toml").is_file()
    assert staged.parent.parent == Path(app.temporaryPath)
    for finisher in finishers:
        finisher()
    assert leftovers(app) == []


def distill_node(module, tmp_path, **values):
    """Distillation panel values with the work folder in ``tmp_path`` (never the home folder)."""
    return parameter_values(module.ReCoKDSegmentParameterNode, workFolder=tmp_path / "work", **values)


def test_distillation_parameters_come_from_the_parameter_node(module, tmp_path):
    fromNode = module.ReCoKDSegmentLogic.distillParametersFromNode

    with pytest.raises(module.ReCoKDSegmentError, match=r"^Choose the teacher's nnU-Net results folder\.$"):
        fromNode(distill_node(module, tmp_path, teacherFolder=Path()))  # a cleared path field

    parameters = fromNode(distill_node(module, tmp_path, teacherFolder=tmp_path / "teacher", dataset=" 990 ",
                                       epochs=3, distillDevice="cpu"), resume=True)
    assert parameters == DistillParameters(teacher=tmp_path / "teacher", dataset="990", work_dir=tmp_path / "work",
                                           epochs=3, device="cpu", resume=True)


def test_distillation_from_scans_takes_the_scans_and_labels_folders_from_the_node(module, tmp_path):
    fromNode = module.ReCoKDSegmentLogic.distillParametersFromNode
    scans = distill_node(module, tmp_path, teacherFolder=tmp_path / "teacher", trainingData="scans",
                         dataset="990", imagesFolder=tmp_path / "scans", labelsFolder=tmp_path / "labels")
    parameters = fromNode(scans)
    assert (parameters.images, parameters.labels, parameters.dataset) == (tmp_path / "scans", None, "")
    scans.useLabels = True
    assert fromNode(scans).labels == tmp_path / "labels"
    scans.imagesFolder = Path()  # a cleared path field
    with pytest.raises(module.ReCoKDSegmentError, match=r"^Choose the folder of scans\.$"):
        fromNode(scans)


@pytest.mark.parametrize("results", [None, "/data/nnUNet_results"])
def test_the_teacher_folder_starts_at_nnunets_results_folder_or_home_never_dot(app, monkeypatch, results):
    if results is None:
        monkeypatch.delenv("nnUNet_results", raising=False)
    else:
        monkeypatch.setenv("nnUNet_results", results)
    module = load_module(monkeypatch)  # the default is read when Slicer loads the module
    default = module.ReCoKDSegmentParameterNode.teacherFolder
    assert default == (Path(results) if results else Path.home()) and default.is_absolute()


def test_distillation_runs_recokd_distill_and_reports_its_error(logic, module, tmp_path):
    parameters = logic.distillParametersFromNode(distill_node(
        module, tmp_path, teacherFolder=tmp_path / "not-a-results-folder", dataset="990", distillDevice="cpu"))

    runner = logic.startDistillation(parameters)

    assert runner is logic.distillRunner and runner.step.command == distill_command(logic.launcher(), parameters)
    assert (tmp_path / "work").is_dir()
    wait_for(lambda: not logic.poll(), timeout=60)
    assert runner.state is RunnerState.FAILED
    assert "is not named like an nnU-Net results folder" in runner.error


def test_cancel_all_stops_a_running_distillation(logic, module, tmp_path):
    parameters = logic.distillParametersFromNode(distill_node(
        module, tmp_path, teacherFolder=tmp_path / "teacher", dataset="990", distillDevice="cpu"))
    runner = logic.startDistillation(parameters)
    assert logic.isActive(runner)
    with pytest.raises(module.ReCoKDSegmentError, match=r"^A distillation is already running"):
        logic.startDistillation(parameters)

    logic.cancelAll(wait=True)

    assert runner.state is RunnerState.IDLE and runner.cancelled
    assert not logic.poll()


def test_closing_the_scene_stops_the_segmentation_but_not_a_distillation_or_an_install(
        logic, module, app, scene, oblique_volume, package_file):
    from ReCoKDSegmentLib.runner import Step

    long_runs = {}
    for name, state in (("distillRunner", RunnerState.RUNNING), ("installRunner", RunnerState.INSTALLING)):
        runner = logic._newRunner()
        runner.start([Step([sys.executable, "-c", "import time; time.sleep(120)"], name, state=state)])
        setattr(logic, name, runner)  # stand-ins for a long distillation and a pip install
        long_runs[name] = runner
    segmentation = logic.startSegmentation(oblique_volume, str(package_file), device="cpu", askConfirmation=False)
    assert logic.isActive(segmentation)

    logic.onSceneClose()

    def segmentation_ended() -> bool:
        segmentation.poll()
        return not segmentation.active

    wait_for(segmentation_ended, timeout=60)
    assert segmentation.cancelled
    assert all(runner.active and not runner.cancelled for runner in long_runs.values())
    logic.cancelAll(wait=True)
    assert not any(runner.active for runner in long_runs.values())
