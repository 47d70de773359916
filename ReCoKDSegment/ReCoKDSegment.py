"""ReCoKD Segment: segment a volume with a small distilled nnU-Net student, from a button or
the Python console, and distil new students from nnU-Net teachers.

All numerical work happens in the ``recokd`` package, run as a background process with
Slicer's Python (``PythonSlicer -m recokd ...``); this module only moves data between the scene
and that process (see ``ReCoKDSegmentLib``). torch, nnU-Net and ``recokd`` are never imported
here, so the module loads fast and a crash or a cancel in the process cannot hurt Slicer.
"""

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from ReCoKDSegmentLib.compatibility import version_floor_message
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

#: Why this Slicer cannot run the module (``None`` when it can). Checked before anything that
#: needs Python 3.10 is imported: below the floor the panel shows this text instead of a traceback.
VERSION_FLOOR_MESSAGE = version_floor_message((slicer.app.majorVersion, slicer.app.minorVersion), sys.version_info)

# The Lib needs Python 3.10. Below the floor these names do not exist, so the annotations that
# name them are quoted (never evaluated) and the parameter node, which needs them, is not defined.
if VERSION_FLOOR_MESSAGE is None:
    from ReCoKDSegmentLib.commands import (
        BACKENDS,
        DEVICES,
        KD_MODES,
        MS_CA_FORMS,
        STUDENT_WIDTHS,
        TRAINING_DATA,
        DistillParameters,
        ModelInfo,
        distill_command,
        models_add_command,
        models_list_command,
        parse_models_list,
        python_executable,
        recokd_launcher,
    )
    from ReCoKDSegmentLib.dependencies import (
        bundled_models_environment,
        bundled_version,
        constraints_text,
        find_training_package,
        installed_versions,
        pip_install_command,
        stage_training_package,
    )
    from ReCoKDSegmentLib.runner import ACTIVE_STATES, ProcessRunner, RunnerState, Step, progress_text

#: torch version the PyTorch extension is asked for when torch is missing.
TORCH_REQUIREMENT = ">=2.3"
ADD_MODEL_ITEM = "__add_model__"
#: ReCoKDSegmentLib modules in dependency order (reloaded with the module by "Reload").
LIB_MODULES = ("compatibility", "geometry", "labels", "terminology", "volumes", "segmentations", "runner", "commands",
               "dependencies", "jobs")


class ReCoKDSegmentError(Exception):
    """A problem the user can fix; the message says what was wrong and what to do."""


#
# ReCoKDSegment
#


class ReCoKDSegment(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("ReCoKD Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["ReCoKD contributors"]
        self.parent.helpText = _("""
Segment a CT or MR volume in seconds to a minute on a CPU or local GPU with a small nnU-Net
<i>student</i> distilled from a large nnU-Net <i>teacher</i> by ReCo-KD. Choose a volume and a
model and click <b>Segment</b>; the work runs in the background and <b>Cancel</b> stops it
without changing the scene. From the Python console:
<pre>from ReCoKDSegment import ReCoKDSegmentLogic
logic = ReCoKDSegmentLogic()
seg = logic.segment(volumeNode, model="phantom", device="auto")
logic.segmentFiles("/data/cases", "/data/results", outputFormat="seg.nrrd")</pre>
The <b>Distil a student</b> section trains a new student from a trained nnU-Net model
(GPU recommended) and adds it to the model list. Needs Slicer 5.10 or newer.
""")
        self.parent.acknowledgementText = _("""
ReCo-KD: region- and context-aware knowledge distillation for efficient 3D medical image
segmentation (arXiv:2601.08301, 2026). Students are nnU-Net v2 networks: F. Isensee et al.,
"nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation",
Nature Methods 18, 203-211 (2021), Apache-2.0. Models trained on the Medical Segmentation
Decathlon (Hippocampus, CC-BY-SA 4.0, Antonelli et al., Nature Communications 13, 4128 (2022))
inherit that licence; the built-in synthetic phantom data are generated, not collected.
Check the licence of the data behind any model package before clinical or commercial use:
these models are research tools, not medical devices.
""")


#
# ReCoKDSegmentParameterNode
#


if VERSION_FLOOR_MESSAGE is None:  # its choices come from the Lib

    @parameterNodeWrapper
    class ReCoKDSegmentParameterNode:
        """Everything the user chose, saved with the scene.

        inputVolume - the volume to segment.
        model - installed model name or model package path, as ``recokd segment -m`` takes it.
        device - "auto" (GPU if available), "cpu" or "cuda".
        fast - faster inference (no test-time mirroring), slightly less accurate.
        backend - the network's CPU runtime: "auto" (the fastest installed), "torch", "openvino", "onnxruntime".
        outputSegmentation - a segmentation to replace; None creates a new one (the default).
        resultSegmentation - the latest result (for "Show 3D").
        The remaining parameters are the distillation panel's, see ``recokd distill --help``;
        the teacher folder starts at nnU-Net's results folder (``$nnUNet_results``) or the home folder.
        trainingData - "dataset" (the teacher's preprocessed ``dataset``) or "scans" (the scans in
        ``imagesFolder``, with the label files in ``labelsFolder`` when ``useLabels``).
        """

        inputVolume: vtkMRMLScalarVolumeNode
        model: str = ""
        device: Annotated[str, Choice(DEVICES)] = "auto"
        fast: bool = False
        backend: Annotated[str, Choice(BACKENDS)] = "auto"
        outputSegmentation: vtkMRMLSegmentationNode
        resultSegmentation: vtkMRMLSegmentationNode
        teacherFolder: Path = Path(os.environ.get("nnUNet_results") or Path.home())
        trainingData: Annotated[str, Choice(TRAINING_DATA)] = "dataset"
        dataset: str = ""
        imagesFolder: Path = Path.home()
        useLabels: bool = False
        labelsFolder: Path = Path.home()
        studentWidth: Annotated[str, Choice(STUDENT_WIDTHS)] = "1/4"
        fold: Annotated[int, WithinRange(0, 4)] = 0
        epochs: Annotated[int, WithinRange(1, 10000)] = 250
        kdMode: Annotated[str, Choice(KD_MODES)] = "recokd"
        msCaForm: Annotated[str, Choice(MS_CA_FORMS)] = "gc"
        kdWeight: Annotated[float, WithinRange(0.0, 10.0)] = 0.01
        distillDevice: Annotated[str, Choice(DEVICES)] = "auto"
        gpuCount: Annotated[int, WithinRange(1, 16)] = 1
        workFolder: Path = Path.home() / "ReCoKD-distill"


#
# ReCoKDSegmentWidget
#


class ReCoKDSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Uses ScriptedLoadableModuleWidget base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py

    Wires the widgets to the parameter node and calls the logic; decides nothing else.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._pollTimer = None
        self._modelComboShows = None  # (models, chosen model) the model list was last filled with

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        if VERSION_FLOOR_MESSAGE is not None:
            label = qt.QLabel(VERSION_FLOOR_MESSAGE)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/ReCoKDSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentProgressBar.hide()
        self.ui.distillProgressBar.hide()
        self.logic = ReCoKDSegmentLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.refreshModelsButton.connect("clicked(bool)", self.onRefreshModels)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.startDistillButton.connect("clicked(bool)", lambda: self.onStartDistillation(resume=False))
        self.ui.resumeDistillButton.connect("clicked(bool)", lambda: self.onStartDistillation(resume=True))
        self.ui.stopDistillButton.connect("clicked(bool)", self.onStopDistillation)
        self.ui.installButton.connect("clicked(bool)", self.onInstallButton)

        self.initializeParameterNode()
        self.updateDependencyStatus()
        if self.logic.isRecokdInstalled():
            self.onRefreshModels()

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed; also after a
        ``setup()`` that failed part way (or showed the version floor), so each part may be missing."""
        if self._pollTimer is not None:
            self._pollTimer.stop()
        if self.logic is not None:
            self.logic.cancelAll(wait=True)
        self.removeObservers()

    def onReload(self) -> None:
        """Stop this widget's runs, then reload the Lib modules too, so that code changes there take effect.

        In that order: a running ``ProcessRunner`` compares its state with the ``RunnerState`` of
        the runner module it was made by; once that module is reloaded, cancelling it would do
        nothing and leave its process and temporary folder behind.
        """
        if self.logic is not None:
            self.logic.cancelAll(wait=True)
        for name in LIB_MODULES:
            module = sys.modules.get(f"ReCoKDSegmentLib.{name}")
            if module is not None:
                importlib.reload(module)
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        if self.logic is not None:  # None below the version floor
            self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)

    def onSceneStartClose(self, caller, event) -> None:
        self.logic.onSceneClose()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # Widgets with the "SlicerParameterName" property in the .ui file follow the node.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiFromParameterNode)
            self.updateGuiFromParameterNode()

    def updateGuiFromParameterNode(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        segmentRunning = self.logic.isActive(self.logic.segmentRunner)
        distillRunning = self.logic.isActive(self.logic.distillRunner)
        canSegment = bool(self._parameterNode.inputVolume and self._parameterNode.model)
        self.ui.segmentButton.text = _("Cancel") if segmentRunning else _("Segment")
        self.ui.segmentButton.enabled = segmentRunning or canSegment
        self.ui.segmentButton.toolTip = "" if canSegment else _("Choose an input volume and a model.")
        self.ui.show3DButton.setSegmentationNode(self._parameterNode.resultSegmentation)
        fromScans = self._parameterNode.trainingData == "scans"
        for widget in (self.ui.datasetLabel, self.ui.datasetLineEdit):
            widget.visible = not fromScans
        for widget in (self.ui.imagesLabel, self.ui.imagesPathLineEdit, self.ui.useLabelsCheckBox,
                       self.ui.labelsPathLineEdit):
            widget.visible = fromScans
        self.ui.labelsPathLineEdit.enabled = self._parameterNode.useLabels
        self.ui.startDistillButton.enabled = not distillRunning
        self.ui.resumeDistillButton.enabled = not distillRunning
        self.ui.stopDistillButton.enabled = distillRunning
        self.ui.installButton.enabled = not (segmentRunning or distillRunning)
        self.updateModelComboBox()

    def updateModelComboBox(self) -> None:
        """Fill the model list, unless it already shows these models with the chosen one current (a
        rebuild on every parameter change would close the list while the user has it open)."""
        combo = self.ui.modelComboBox
        chosen = self._parameterNode.model
        shown = (list(self.logic.models), chosen)
        if shown == self._modelComboShows and combo.currentIndex == (max(combo.findData(chosen), 0) if chosen else -1):
            return
        self._modelComboShows = shown
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for model in self.logic.models:
            combo.addItem(model.name, model.path)
            combo.setItemData(combo.count - 1, model.description or model.path, qt.Qt.ToolTipRole)
        if chosen and combo.findData(chosen) < 0:
            combo.addItem(Path(chosen).name, chosen)  # a package path chosen from the console
        combo.addItem(_("Add model package..."), ADD_MODEL_ITEM)
        combo.currentIndex = max(combo.findData(chosen), 0) if chosen else -1
        combo.blockSignals(wasBlocked)

    def updateDependencyStatus(self) -> None:
        self.ui.dependencyStatusLabel.text = self.logic.dependencyStatus()

    # -- model selector ---------------------------------------------------------------------

    def onModelActivated(self, index: int) -> None:
        data = self.ui.modelComboBox.itemData(index)
        if data != ADD_MODEL_ITEM:
            self._parameterNode.model = data
            return
        self.updateModelComboBox()  # back to the current model while the dialog is open
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(), _("Add model package"), "", _("ReCoKD model packages (*.zip)"))
        if path:
            with slicer.util.tryWithErrorDisplay(_("Could not add the model package."), waitCursor=True):
                self.startRun(self.logic.startAddingModel(path, **self.modelsSectionCallbacks()))

    def onRefreshModels(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Could not list the installed models.")):
            self.startRun(self.logic.startListingModels(**self.modelsSectionCallbacks()))

    def onModelsRunFinished(self, runner) -> None:
        if runner.state is RunnerState.DONE and runner.output:
            self._parameterNode.model = self._parameterNode.model or runner.output[0].path
        self.updateGuiFromParameterNode()

    # -- segment ----------------------------------------------------------------------------

    def onSegmentButton(self) -> None:
        if self.logic.isActive(self.logic.segmentRunner):
            self.logic.segmentRunner.cancel()
            return
        self.ui.segmentLog.clear()
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            p = self._parameterNode
            self.startRun(self.logic.startSegmentation(
                p.inputVolume, model=p.model, device=p.device, fast=p.fast, backend=p.backend,
                outputSegmentation=p.outputSegmentation,
                **self.segmentSectionCallbacks(self.onSegmentationFinished)))

    def onSegmentationFinished(self, runner) -> None:
        if runner.state is RunnerState.DONE:
            self._parameterNode.resultSegmentation = runner.output
        self.updateGuiFromParameterNode()

    # -- distil -----------------------------------------------------------------------------

    def onStartDistillation(self, resume: bool) -> None:
        self.ui.distillLog.clear()
        with slicer.util.tryWithErrorDisplay(_("Could not start the distillation."), waitCursor=True):
            parameters = self.logic.distillParametersFromNode(self._parameterNode, resume=resume)
            self.startRun(self.logic.startDistillation(parameters, **self.runCallbacks(
                self.ui.distillProgressBar, self.ui.distillStatusLabel, self.ui.distillLog, self.onModelsRunFinished,
                cancelledText=_("Stopped; Resume continues from the last checkpoint in the work folder."))))

    def onStopDistillation(self) -> None:
        self.logic.distillRunner.cancel()

    # -- set-up -----------------------------------------------------------------------------

    def onInstallButton(self) -> None:
        self.ui.segmentLog.clear()
        with slicer.util.tryWithErrorDisplay(_("Could not install the dependencies."), waitCursor=True):
            self.startRun(self.logic.startInstall(force=True, **self.segmentSectionCallbacks(self.onInstallFinished)))

    def onInstallFinished(self, runner) -> None:
        self.updateDependencyStatus()
        if runner.state is RunnerState.DONE:
            self.onRefreshModels()

    # -- runs -------------------------------------------------------------------------------

    def segmentSectionCallbacks(self, onFinished, **endTexts) -> dict:
        """Runs started from the Segment and Setup sections report in the Segment section."""
        return self.runCallbacks(self.ui.segmentProgressBar, self.ui.segmentStatusLabel, self.ui.segmentLog, onFinished,
                                 **endTexts)

    def modelsSectionCallbacks(self) -> dict:
        """Listing or adding models reports in the Segment section, ending with the number of models."""
        return self.segmentSectionCallbacks(self.onModelsRunFinished, doneText=lambda runner: _(
            "{count} models available.").format(count=len(runner.output or [])))

    def runCallbacks(self, progressBar, statusLabel, logWidget, onFinished, doneText=None, cancelledText=None) -> dict:
        """Callbacks that show one run's progress, log and end in the given widgets.

        ``doneText(runner)`` and ``cancelledText`` are the status once the run is done or
        cancelled (default: its duration, and that the scene was not changed).
        """
        runner = None

        def onProgress(update):
            if update.fraction is None:
                progressBar.setRange(0, 0)  # busy indicator
            else:
                progressBar.setRange(0, 1000)
                progressBar.value = int(update.fraction * 1000)
            statusLabel.text = progress_text(update, runner.elapsed if runner else 0.0)

        def onState(state):
            if state in (RunnerState.INSTALLING, RunnerState.RUNNING):
                progressBar.show()
                statusLabel.text = _("{step}...").format(step=runner.step.description)
            elif state is RunnerState.IMPORTING:
                statusLabel.text = _("Importing the result...")
            elif state is RunnerState.FAILED:
                progressBar.hide()
                statusLabel.text = _("Failed.")
                error, log = runner.error, "\n".join(runner.log_lines)
                # Not from inside poll(): the dialog's event loop would re-enter the timer.
                qt.QTimer.singleShot(0, lambda: slicer.util.errorDisplay(error, detailedText=log))
            elif state is RunnerState.IDLE:
                progressBar.hide()
                statusLabel.text = cancelledText or _("Cancelled; the scene was not changed.")
            elif state is RunnerState.DONE:
                progressBar.hide()
                statusLabel.text = (doneText(runner) if doneText else
                                    _("Done in {seconds:.1f} s.").format(seconds=runner.elapsed))
            if state in (RunnerState.FAILED, RunnerState.IDLE, RunnerState.DONE):
                onFinished(runner)
            self.updateGuiFromParameterNode()

        def onLog(line):
            logWidget.appendPlainText(line)

        def bind(started):
            nonlocal runner
            runner = started

        return {"onProgress": onProgress, "onLog": onLog, "onState": onState, "onCreated": bind}

    def startRun(self, runner) -> None:
        self.updateGuiFromParameterNode()
        if runner.active:
            self._pollTimer.start()

    def onPollTimer(self) -> None:
        if not self.logic.poll():
            self._pollTimer.stop()


#
# ReCoKDSegmentLogic
#


class ReCoKDSegmentLogic(ScriptedLoadableModuleLogic):
    """Segmentation, batch segmentation, distillation and set-up, usable without the GUI.

    ``segment``, ``segmentFiles``, ``installedModels`` and ``installDependencies`` block until
    done (for the Python console). The ``start...`` methods return a running
    ``ProcessRunner``; call :meth:`poll` (the widget does it from a timer) to advance it.
    """

    def __init__(self) -> None:
        if VERSION_FLOOR_MESSAGE is not None:
            raise ReCoKDSegmentError(VERSION_FLOOR_MESSAGE)
        ScriptedLoadableModuleLogic.__init__(self)
        # recokd processes inherit this process's environment: they offer the extension's bundled models
        os.environ.update(bundled_models_environment(self.moduleDir(), os.environ))
        self.segmentRunner = None
        self.distillRunner = None
        self.modelsRunner = None
        self.installRunner = None
        self.models: list[ModelInfo] = []

    def getParameterNode(self):
        return ReCoKDSegmentParameterNode(super().getParameterNode())

    @staticmethod
    def terminologiesLogic():
        """Slicer's terminologies logic (custom structures are registered with it), or None without that module."""
        terminologies = getattr(getattr(slicer, "modules", None), "terminologies", None)
        return terminologies.logic() if terminologies is not None else None

    # -- environment ------------------------------------------------------------------------

    @staticmethod
    def launcher() -> list:
        """``[PythonSlicer, "-m", "recokd"]``."""
        return recokd_launcher(python_executable())

    @staticmethod
    def moduleDir() -> Path:
        return Path(__file__).resolve().parent

    @staticmethod
    def installedVersion(distribution: str):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def isRecokdInstalled(self) -> bool:
        importlib.invalidate_caches()
        return importlib.util.find_spec("recokd") is not None

    def bundledPackage(self) -> Path:
        package = find_training_package(self.moduleDir())
        if package is None:
            raise ReCoKDSegmentError(
                _("The bundled ReCoKDTraining package is missing next to {path}. Reinstall the ReCoKD extension.")
                .format(path=self.moduleDir()))
        return package

    def dependencyStatus(self) -> str:
        """One line for the set-up section: what is installed and what is missing."""
        torch = self.installedVersion("torch")
        recokd = self.installedVersion("recokd")
        parts = [
            _("PyTorch {version}").format(version=torch) if torch else _("PyTorch: not installed"),
            _("recokd {version}").format(version=recokd) if recokd else _("recokd: not installed (click Install)"),
        ]
        package = find_training_package(self.moduleDir())
        if package is None:
            parts.append(_("bundled recokd package missing: reinstall the extension"))
        elif recokd and recokd != bundled_version(package):
            parts.append(_("update to {version} available").format(version=bundled_version(package)))
        return ", ".join(parts)

    def _requireRecokd(self) -> None:
        if not self.isRecokdInstalled():
            raise ReCoKDSegmentError(
                _("The recokd package is not installed yet: click 'Install / update' in the Setup section."))

    def ensureTorch(self, askConfirmation: bool = True) -> None:
        """torch comes from the PyTorch extension (which asks the user), never from plain pip."""
        if self.installedVersion("torch"):
            return
        try:
            import PyTorchUtils
        except ModuleNotFoundError as error:
            raise ReCoKDSegmentError(
                _("ReCoKD needs the PyTorch extension: install 'PyTorch' from the Extensions Manager and restart Slicer.")
            ) from error
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=askConfirmation, torchVersionRequirement=TORCH_REQUIREMENT)
        if torch is None:
            raise ReCoKDSegmentError(_("PyTorch is required; its installation was cancelled."))

    def installSteps(self, askConfirmation: bool = True, force: bool = False):
        """Steps (and clean-ups) that install the bundled ``recokd`` (with nnU-Net) when it is
        missing or older than the bundled one; none when it is up to date.

        pip runs under a constraints file that pins Slicer's SimpleITK, requests, numpy and vtk
        and the PyTorch extension's torch to their installed versions.
        """
        self.ensureTorch(askConfirmation)
        package = self.bundledPackage()
        if not force and self.installedVersion("recokd") == bundled_version(package):
            return [], []
        if askConfirmation and not slicer.app.commandOptions().testingEnabled and not slicer.util.confirmOkCancelDisplay(
            _("ReCoKD will now install its Python package 'recokd' and nnU-Net v2 into Slicer's Python "
              "(a few hundred MB, a few minutes). Slicer's own packages and PyTorch are kept as they are."),
            windowTitle=_("Install ReCoKD dependencies"),
        ):
            raise ReCoKDSegmentError(_("Installation cancelled: ReCoKD cannot run without its Python package."))
        stagingDir = Path(tempfile.mkdtemp(prefix="recokd-install-", dir=slicer.app.temporaryPath))
        staged = stage_training_package(package, stagingDir)
        constraintsFile = stagingDir / "constraints.txt"
        constraintsFile.write_text(constraints_text(installed_versions()), encoding="utf-8")
        step = Step(pip_install_command(python_executable(), staged, constraintsFile),
                    _("Installing recokd and nnU-Net"), state=RunnerState.INSTALLING)
        return [step], [lambda: shutil.rmtree(stagingDir, ignore_errors=True)]

    # -- runs -------------------------------------------------------------------------------

    @staticmethod
    def isActive(runner) -> bool:
        return runner is not None and runner.active

    def _newRunner(self, onProgress=None, onLog=None, onState=None, onCreated=None) -> "ProcessRunner":
        runner = ProcessRunner(on_progress=onProgress, on_log=onLog or logging.info, on_state=onState)
        if onCreated:
            onCreated(runner)
        return runner

    def _runners(self) -> list:
        candidates = (self.segmentRunner, self.distillRunner, self.modelsRunner, self.installRunner)
        return [runner for runner in candidates if runner is not None]

    def poll(self) -> bool:
        """Advance every run; True while any is still active."""
        states = [runner.poll() for runner in self._runners()]
        return any(state in ACTIVE_STATES for state in states)

    def onSceneClose(self) -> None:
        """Stop what belongs to the closing scene: the segmentation (its volume and result node go
        with the scene). A distillation, the model listing and a dependency install go on: they
        do not touch the scene, and killing pip mid-install could leave Slicer's Python broken."""
        if self.segmentRunner is not None:
            self.segmentRunner.cancel()

    def cancelAll(self, wait: bool = False) -> None:
        """Cancel every run; with ``wait``, until their processes are gone."""
        for runner in self._runners():
            runner.cancel()
        if wait:
            for runner in self._runners():
                runner.wait()

    def _wait(self, runner) -> object:
        """Block until ``runner`` ends (keeping the GUI painted); its output, or an error."""
        try:
            runner.wait(idle=slicer.app.processEvents)
        except KeyboardInterrupt:
            runner.cancel()
            runner.wait()
            raise
        if runner.state is RunnerState.FAILED:
            raise ReCoKDSegmentError(runner.error)
        if runner.cancelled:
            raise ReCoKDSegmentError(_("Cancelled."))
        return runner.output

    def _modelsListStep(self) -> "Step":
        return Step(models_list_command(self.launcher()), _("Listing models"), importer=self._storeModels)

    def _storeModels(self, outcome) -> list:
        self.models = parse_models_list(outcome.stdout_lines)
        return self.models

    def _requireIdle(self, runner, what: str) -> None:
        if self.isActive(runner):
            raise ReCoKDSegmentError(_("{what} is already running; wait for it or cancel it.").format(what=what))

    def startInstall(self, askConfirmation: bool = True, force: bool = False, **callbacks) -> "ProcessRunner":
        self._requireIdle(self.installRunner, _("An installation"))
        steps, finishers = self.installSteps(askConfirmation, force)
        runner = self._newRunner(**callbacks)
        if steps:
            runner.start(steps, on_finished=finishers)
        self.installRunner = runner
        return runner

    def installDependencies(self, askConfirmation: bool = True) -> None:
        """Install (or update) ``recokd`` and nnU-Net into Slicer's Python if needed (blocking)."""
        runner = self.startInstall(askConfirmation)
        if runner.active:
            self._wait(runner)

    def startListingModels(self, **callbacks) -> "ProcessRunner":
        self._requireIdle(self.modelsRunner, _("Listing or adding models"))
        self._requireRecokd()
        runner = self._newRunner(**callbacks)
        runner.start([self._modelsListStep()])
        self.modelsRunner = runner
        return runner

    def installedModels(self) -> list:
        """The installed model packages (``ModelInfo``: name, path, labels, description)."""
        return self._wait(self.startListingModels())

    def startAddingModel(self, packagePath, **callbacks) -> "ProcessRunner":
        self._requireIdle(self.modelsRunner, _("Listing or adding models"))
        self._requireRecokd()
        runner = self._newRunner(**callbacks)
        runner.start([Step(models_add_command(self.launcher(), Path(packagePath)), _("Adding the model")),
                      self._modelsListStep()])
        self.modelsRunner = runner
        return runner

    def addModel(self, packagePath) -> list:
        """Install a model package file (``*.recokd.zip``); returns the updated model list."""
        return self._wait(self.startAddingModel(packagePath))

    def _resolveModel(self, model) -> str:
        if model:
            return str(model)
        models = self.installedModels()
        if not models:
            raise ReCoKDSegmentError(_("No model is installed. Add a model package first (logic.addModel(path))."))
        return models[0].path

    @staticmethod
    def _preparedJob(makeJob):
        """A segmentation job and its first step; the Lib's refusals of its parameters or input
        (``ValueError``, ``OSError``) become this module's error, and a refused job leaves no files."""
        job = None
        try:
            job = makeJob()
            return job, job.prepare()
        except BaseException as error:
            if job is not None:
                job.cleanup()
            if isinstance(error, (ValueError, OSError)):
                raise ReCoKDSegmentError(_("Cannot start the segmentation: {reason}").format(reason=error)) from error
            raise

    def startSegmentation(self, volumeNode, model, device="auto", fast=False, outputSegmentation=None,
                          askConfirmation=True, backend="auto", **callbacks) -> "ProcessRunner":
        """Start segmenting ``volumeNode`` in the background (installing dependencies first when
        needed). The runner's ``output`` is the segmentation node once it is DONE."""
        from ReCoKDSegmentLib.jobs import SegmentVolumeJob  # SimpleITK loads on first use

        self._requireIdle(self.segmentRunner, _("A segmentation"))
        if volumeNode is None:
            raise ReCoKDSegmentError(_("Choose an input volume."))
        if not model:
            raise ReCoKDSegmentError(_("Choose a model."))
        installSteps, finishers = self.installSteps(askConfirmation)
        job, step = self._preparedJob(lambda: SegmentVolumeJob(
            self.launcher(), slicer.mrmlScene, volumeNode, model, device, fast, outputSegmentation,
            temp_root=Path(slicer.app.temporaryPath), backend=backend, terminologies=self.terminologiesLogic()))
        runner = self._newRunner(**callbacks)
        runner.start([*installSteps, step], on_finished=[*finishers, job.cleanup])
        self.segmentRunner = runner
        return runner

    def segment(self, volumeNode, model=None, device="auto", fast=False, outputSegmentation=None, backend="auto"):
        """Segment ``volumeNode`` and return the segmentation node (blocking).

        ``model``: an installed model's name or a model package path (default: the first
        installed model); ``device``: "auto", "cpu" or "cuda"; ``fast``: quicker, slightly less
        accurate; ``outputSegmentation``: a segmentation node to replace instead of creating one;
        ``backend``: the network's CPU runtime ("auto": the fastest installed).
        """
        self.installDependencies()
        runner = self.startSegmentation(volumeNode, self._resolveModel(model), device, fast, outputSegmentation,
                                        backend=backend)
        return self._wait(runner)

    def segmentFiles(self, inputs, outputFolder, model=None, device="auto", fast=False, outputFormat="seg.nrrd",
                     backend="auto"):
        """Segment image files - a folder, one file, or a list of files - in one background
        process (the model loads once) and write one ``.seg.nrrd`` (or ``.nii.gz`` label image)
        per input into ``outputFolder``. Returns the written paths; the scene is not touched."""
        from ReCoKDSegmentLib.jobs import SegmentFilesJob  # SimpleITK loads on first use

        self.installDependencies()
        model = self._resolveModel(model)
        job, step = self._preparedJob(lambda: SegmentFilesJob(
            self.launcher(), inputs, outputFolder, model, device, fast, outputFormat,
            temp_root=Path(slicer.app.temporaryPath), backend=backend))
        runner = self._newRunner()
        runner.start([step], on_finished=[job.cleanup])
        return self._wait(runner)

    @staticmethod
    def distillParametersFromNode(parameterNode, resume: bool = False) -> "DistillParameters":
        try:
            fromScans = parameterNode.trainingData == "scans"
            return DistillParameters(
                teacher=parameterNode.teacherFolder, dataset="" if fromScans else parameterNode.dataset.strip(),
                images=parameterNode.imagesFolder if fromScans else None,
                labels=parameterNode.labelsFolder if fromScans and parameterNode.useLabels else None,
                work_dir=parameterNode.workFolder, width=parameterNode.studentWidth, fold=parameterNode.fold,
                epochs=parameterNode.epochs, mode=parameterNode.kdMode, ms_ca=parameterNode.msCaForm,
                kd_weight=parameterNode.kdWeight, device=parameterNode.distillDevice, gpus=parameterNode.gpuCount,
                resume=resume,
            )
        except ValueError as error:
            message = str(error)  # not str.capitalize(): it would lower-case "nnU-Net", "KD", "GPU"
            raise ReCoKDSegmentError(message[:1].upper() + message[1:] + ".") from error

    def startDistillation(self, parameters: "DistillParameters", askConfirmation=True, **callbacks) -> "ProcessRunner":
        """Start ``recokd distill`` (under torchrun for several GPUs); when it has exported the
        student, add the package to the installed models and refresh ``models``."""
        self._requireIdle(self.distillRunner, _("A distillation"))
        Path(parameters.work_dir).mkdir(parents=True, exist_ok=True)
        installSteps, finishers = self.installSteps(askConfirmation)
        runner = self._newRunner(**callbacks)
        runner.start([
            *installSteps,
            Step(distill_command(self.launcher(), parameters), _("Distillation"), expects_result=True),
            lambda result: Step(models_add_command(self.launcher(), Path(result["package"]), overwrite=True),
                                _("Adding the model")),
            self._modelsListStep(),
        ], on_finished=finishers)
        self.distillRunner = runner
        return runner


#
# ReCoKDSegmentTest
#


class ReCoKDSegmentTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (``Reload and Test``, or ctest): the MRML bridge on a generated oblique
    phantom, cancel on a real background process, and - when ``recokd`` and a model are
    installed - a real segmentation of the synthetic phantom."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        if VERSION_FLOOR_MESSAGE is not None:
            self.delayDisplay(VERSION_FLOOR_MESSAGE)
            return
        self.setUp()
        self.test_VolumeRoundTrip()
        self.setUp()
        self.test_SegmentationFromLabels()
        self.setUp()
        self.test_CancelLeavesSceneUnchanged()
        self.setUp()
        self.test_SegmentPhantom()

    @staticmethod
    def _phantomVolume():
        """A 24x20x16 oblique, anisotropic volume with three blobs of very different sizes."""
        import numpy as np

        z, y, x = np.indices((16, 20, 24))
        voxels = np.full((16, 20, 24), -1000, dtype=np.int16)
        labels = np.zeros(voxels.shape, dtype=np.uint8)
        for value, (cz, cy, cx), radius in [(1, (8, 10, 12), 6.0), (2, (4, 5, 18), 2.5), (3, (12, 15, 5), 1.2)]:
            inside = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
            voxels[inside] = 40 * value
            labels[inside] = value
        ijkToRAS = vtk.vtkMatrix4x4()
        angle = np.deg2rad(20)
        axes = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        for row in range(3):
            for column, spacing in enumerate((0.8, 1.1, 2.5)):
                ijkToRAS.SetElement(row, column, axes[row, column] * spacing)
            ijkToRAS.SetElement(row, 3, (10.0, -20.0, 5.0)[row])
        volumeNode = slicer.util.addVolumeFromArray(voxels, ijkToRAS=ijkToRAS, name="ReCoKDPhantom")
        return volumeNode, labels

    def test_VolumeRoundTrip(self):
        import numpy as np
        from ReCoKDSegmentLib.volumes import matrix_to_numpy, write_volume

        self.delayDisplay("Volume node -> file -> volume node")
        volumeNode, _labels = self._phantomVolume()
        path = write_volume(volumeNode, Path(slicer.app.temporaryPath) / "ReCoKDPhantom.nrrd")
        loaded = slicer.util.loadVolume(str(path))
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(loaded), slicer.util.arrayFromVolume(volumeNode))
        original, reread = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(original)
        loaded.GetIJKToRASMatrix(reread)
        np.testing.assert_allclose(matrix_to_numpy(reread), matrix_to_numpy(original), atol=1e-6)
        path.unlink()

    def test_SegmentationFromLabels(self):
        import numpy as np
        from ReCoKDSegmentLib.labels import labels_from_dicts
        from ReCoKDSegmentLib.segmentations import commit_segmentation, prepare_segmentation
        from ReCoKDSegmentLib.volumes import array_from_volume

        self.delayDisplay("Label array -> segmentation node")
        volumeNode, labels = self._phantomVolume()
        anatomy = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
        labelInfos = labels_from_dicts(
            {"value": value, "name": name, "color": color, "category": anatomy,
             "type": {"scheme": "SCT", "code": code, "meaning": name}, "modifier": None, "custom": False}
            for value, name, color, code in [(1, "Liver", [221, 130, 101], "10200004"),
                                             (2, "Spleen", [157, 108, 162], "78961009"),
                                             (3, "Pancreas", [249, 180, 111], "15776009")])
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        _voxels, geometry = array_from_volume(volumeNode)
        prepared = prepare_segmentation(labels, geometry, labelInfos, volumeNode)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        segmentationNode = commit_segmentation(prepared, slicer.mrmlScene, name="Phantom segmentation")
        segmentation = segmentationNode.GetSegmentation()
        for label in labelInfos:
            segmentId = segmentation.GetSegmentIdBySegmentName(label.name)
            segment = segmentation.GetSegment(segmentId)
            self.assertEqual(segment.GetTerminology(), label.terminology_entry())
            np.testing.assert_allclose(segment.GetColor(), label.color_float, atol=1e-6)
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
            np.testing.assert_array_equal(mask > 0, labels == label.value)

    def test_CancelLeavesSceneUnchanged(self):
        from ReCoKDSegmentLib.jobs import SegmentVolumeJob

        self.delayDisplay("Cancel a running segmentation")
        volumeNode, _labels = self._phantomVolume()
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        # A real background process that reports progress forever, in place of recokd.
        endless = ("import json, time\n"
                   "while True:\n"
                   "    print(json.dumps({'event': 'progress', 'stage': 'predicting', 'fraction': 0.5}), flush=True)\n"
                   "    time.sleep(0.1)\n")
        job = SegmentVolumeJob([python_executable(), "-c", endless], slicer.mrmlScene, volumeNode, "any-model",
                               temp_root=Path(slicer.app.temporaryPath))
        progress = []
        runner = ProcessRunner(on_progress=progress.append, grace_seconds=2.0)
        runner.start([job.prepare()], on_finished=[job.cleanup])
        while not progress and runner.poll() is RunnerState.RUNNING:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertTrue(progress, runner.error)
        runner.cancel()
        self.assertEqual(runner.wait(timeout=30), RunnerState.IDLE)
        self.assertTrue(runner.cancelled)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.assertFalse(job.work_dir.exists())

    def test_SegmentPhantom(self):
        """Real end to end run: needs ``recokd`` and a model (``RECOKD_TEST_MODEL`` or the first installed)."""
        import subprocess

        logic = ReCoKDSegmentLogic()
        if not logic.isRecokdInstalled():
            self.delayDisplay("recokd is not installed: end-to-end segmentation skipped")
            return
        model = os.environ.get("RECOKD_TEST_MODEL") or next((m.path for m in logic.installedModels()), None)
        if not model:
            self.delayDisplay("No model installed: end-to-end segmentation skipped")
            return
        self.delayDisplay(f"Segmenting the synthetic phantom with {model}")
        phantomDir = Path(tempfile.mkdtemp(dir=slicer.app.temporaryPath))
        try:
            subprocess.run([*logic.launcher(), "phantom", "--out", str(phantomDir / "Dataset999_Phantom"),
                            "--cases", "0", "--test-cases", "1", "--size", "48", "48", "48"], check=True)
            image = next((phantomDir / "Dataset999_Phantom" / "imagesTs").iterdir())
            volumeNode = slicer.util.loadVolume(str(image))
            segmentationNode = logic.segment(volumeNode, model=model, device="auto")
        finally:
            shutil.rmtree(phantomDir, ignore_errors=True)
        segmentation = segmentationNode.GetSegmentation()
        self.assertGreater(segmentation.GetNumberOfSegments(), 0)
        nonEmpty = [i for i in range(segmentation.GetNumberOfSegments())
                    if slicer.util.arrayFromSegmentBinaryLabelmap(
                        segmentationNode, segmentation.GetNthSegmentID(i), volumeNode).any()]
        self.assertTrue(nonEmpty, "every segment is empty")
        self.delayDisplay("Test passed")
