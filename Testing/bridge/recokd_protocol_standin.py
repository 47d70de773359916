"""PROTOCOL STAND-IN for the ``recokd`` command line, used by the bridge tests only.

It accepts exactly the arguments the Slicer module builds for ``recokd segment``,
``recokd distill`` and ``recokd models add`` (unknown or missing flags make it exit 2, as
argparse does), and speaks the ``--progress json`` protocol. It does no deep learning:
``segment`` thresholds the input image (> 0 -> label 1, the top-left corner voxel -> label 2)
and writes the labels in the input's geometry; ``distill`` only reports epochs. The real end to
end run with a trained model is a separate test.

Behaviour switches through the model / dataset name:
  model ``slow``: report progress forever (until killed), after starting a grandchild process
    whose pid goes to ``$STANDIN_PID_FILE`` (to check that cancel ends the whole tree);
  model ``broken``: report an error event and exit 1.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def emit(**event) -> None:
    print(json.dumps(event), flush=True)


LABELS = [
    {"value": 1, "name": "Bright block", "color": [221, 130, 101],
     "category": {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"},
     "type": {"scheme": "SCT", "code": "10200004", "meaning": "Liver"}, "modifier": None, "custom": False},
    {"value": 2, "name": "Corner", "color": [10, 200, 30],
     "category": {"scheme": "ReCoKD", "code": "segment", "meaning": "Segment"},
     "type": {"scheme": "ReCoKD", "code": "corner", "meaning": "Corner"}, "modifier": None, "custom": True},
]


def segment(args) -> int:
    import numpy as np
    import SimpleITK as sitk

    if args.model == "broken":
        emit(event="error", message="model package 'broken' is corrupt")
        return 1
    if args.model == "slow":
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(os.environ["STANDIN_PID_FILE"]).write_text(f"{os.getpid()} {grandchild.pid}")
        step = 0
        while True:
            emit(event="progress", stage="predicting", fraction=min(0.99, step / 1000), message=f"tile {step}")
            step += 1
            time.sleep(0.05)
    source, target = Path(args.input), Path(args.output)
    files = sorted(source.iterdir()) if source.is_dir() else [source]
    outputs = []
    for number, path in enumerate(files):
        # A partial line first: the JSON object arrives in two writes.
        sys.stdout.write('{"event": "progress", "stage": "loading", ')
        sys.stdout.flush()
        time.sleep(0.05)
        sys.stdout.write(f'"fraction": {number / len(files):.2f}, "message": "{path.name}"}}\n')
        sys.stdout.flush()
        print(f"log line for {path.name} (not JSON)", flush=True)
        print(f"stderr log for {path.name}", file=sys.stderr, flush=True)
        image = sitk.ReadImage(str(path))
        voxels = sitk.GetArrayFromImage(image)
        labels = (voxels > 0).astype(np.uint8)
        labels[0, 0, 0] = 2
        label_image = sitk.GetImageFromArray(labels)
        label_image.CopyInformation(image)
        output = target / (path.name.split(".")[0] + ".nii.gz") if source.is_dir() else target
        sitk.WriteImage(label_image, str(output), True)
        outputs.append({"input": str(path), "output": str(output), "seconds": 0.1})
    emit(event="progress", stage="writing", fraction=1.0, message="done")
    emit(event="result", outputs=outputs, labels=LABELS)
    return 0


def distill(args) -> int:
    for epoch in range(1, args.epochs + 1):
        print(f"epoch {epoch}: train loss 0.{9 - epoch}", flush=True)
        emit(event="progress", stage="training", epoch=epoch, epochs=args.epochs,
             fraction=epoch / args.epochs, message=f"mode {args.mode}, MS-CA {args.ms_ca}")
    package = Path(args.work_dir) / "student.recokd.zip"
    package.write_bytes(b"stand-in package")
    emit(event="result", package=str(package))
    return 0


def models(args) -> int:
    print(f"Installed '{Path(args.package).name}' at /models/{Path(args.package).name}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="recokd (protocol stand-in)")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("segment")
    p.add_argument("-m", dest="model", required=True)
    p.add_argument("-i", dest="input", required=True)
    p.add_argument("-o", dest="output", required=True)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], required=True)
    p.add_argument("--backend", choices=["auto", "torch", "openvino", "onnxruntime"], required=True)
    p.add_argument("--fast", action="store_true")
    p.add_argument("--progress", choices=["json"], required=True)
    p.add_argument("--overwrite", action="store_true", required=True)
    p.set_defaults(func=segment)
    p = commands.add_parser("distill")
    p.add_argument("--teacher", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--width", choices=["1", "1/2", "1/4", "1/8"], required=True)
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--mode", choices=["recokd", "logit", "none"], required=True)
    p.add_argument("--ms-ca", choices=["gc", "affinity"], required=True)
    p.add_argument("--kd-weight", type=float, required=True)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--progress", choices=["json"], required=True)
    p.set_defaults(func=distill)
    p = commands.add_parser("models")
    p.add_argument("action", choices=["add"])
    p.add_argument("package")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=models)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
