"""Synthetic CT-like abdominal phantoms (portal-venous contrast phase) as an nnU-Net v2 raw dataset.

The phantom is the project's embedded default data: nothing is downloaded. Each case is a
body outline (air, subcutaneous fat, soft tissue, a bony spine) holding organs of very
different sizes, so that small-structure accuracy can be measured:

==================  ============  =====================================
structure           HU (mean)     size in a 64^3 case
==================  ============  =====================================
liver               ~110          large (about 4 % of the volume)
kidney_left/right   ~180          medium (about 0.5 % each)
adrenal_gland       ~35 in fat    tiny (< 0.1 %)
vessel              ~250          tiny, thin curved tube (< 0.1 %)
==================  ============  =====================================

Anatomy is defined in normalised coordinates ``u`` in [-1, 1]^3 over the image grid (axis 0
is superior-inferior), so voxel counts do not depend on the random spacing; the spacing and a
non-identity direction are then written as image metadata, as a scanner would. Every case
gets a smooth random displacement field, jittered organ positions and sizes, its own
intensities, partial-volume blur and noise. Output is a pure function of ``(seed, case)``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from recokd.errors import RecokdError

log = logging.getLogger(__name__)

AIR_HU, FAT_HU, SOFT_TISSUE_HU, BONE_HU = -1000.0, -100.0, 40.0, 700.0


@dataclass(frozen=True)
class Organ:
    """One labelled structure: an implicit shape in normalised coordinates and its CT value."""

    name: str
    hu: float
    center: tuple[float, float, float]  # (z, y, x) in [-1, 1]
    radii: tuple[float, float, float]  # ellipsoid semi-axes; for a tube: (half length, radius, bend)
    tube: bool = False
    small: bool = False  # one of the tiny structures :attr:`PhantomConfig.small_structure_scale` widens

    def widened(self, factor: float) -> Organ:
        """The organ with its cross-section scaled by ``factor``: all semi-axes, or a tube's radius only."""
        if factor == 1.0:
            return self
        half_length, radius, bend = self.radii
        radii = (half_length, radius * factor, bend) if self.tube else tuple(r * factor for r in self.radii)
        return replace(self, radii=radii)


ORGANS: dict[str, Organ] = {
    o.name: o
    for o in (
        Organ("liver", 110.0, (0.15, -0.05, -0.35), (0.5, 0.45, 0.38)),
        Organ("kidney_left", 180.0, (-0.2, 0.28, 0.42), (0.26, 0.2, 0.16)),
        Organ("kidney_right", 180.0, (-0.25, 0.28, -0.42), (0.26, 0.2, 0.16)),
        Organ("adrenal_gland", 35.0, (0.22, 0.25, 0.3), (0.1, 0.07, 0.08), small=True),
        Organ("vessel", 250.0, (0.0, 0.18, 0.06), (0.55, 0.04, 0.07), tube=True, small=True),
    )
}
DEFAULT_CLASSES: tuple[str, ...] = tuple(ORGANS)


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. ``classes`` is a subset of :data:`ORGANS`, in label order."""

    shape: tuple[int, int, int] = (64, 64, 64)
    classes: tuple[str, ...] = DEFAULT_CLASSES
    spacing_range: tuple[float, float] = (0.7, 2.5)  # mm, drawn per axis: anisotropic
    max_rotation_deg: float = 20.0
    deformation: float = 0.06  # amplitude of the smooth displacement, normalised units
    noise_hu: tuple[float, float] = (10.0, 25.0)
    # Cross-section of the adrenal gland and the vessel relative to the table above: at 40^3 the
    # vessel's default radius is under one voxel; the demo's 2 keeps both tiny (0.15-0.3 % of the
    # volume each) but several voxels across.
    small_structure_scale: float = 1.0

    def __post_init__(self) -> None:
        unknown = [c for c in self.classes if c not in ORGANS]
        if unknown or not self.classes:
            raise RecokdError(f"Unknown phantom classes {unknown}; choose from {list(ORGANS)}.")
        if len(self.shape) != 3 or min(self.shape) < 16:
            raise RecokdError(f"Phantom shape must be three sizes of at least 16 voxels, got {self.shape}.")
        if not 0.5 <= self.small_structure_scale <= 3.0:
            raise RecokdError(f"small_structure_scale must be in [0.5, 3], got {self.small_structure_scale}.")


@dataclass
class PhantomCase:
    """One generated case: ``image`` (int16 HU) and ``labels`` (uint8), both shaped (z, y, x)."""

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]  # (x, y, z) as ITK orders it
    direction: tuple[float, ...]  # 3x3 row-major, ITK order
    origin: tuple[float, float, float]

    def to_sitk(self) -> tuple[sitk.Image, sitk.Image]:
        images = []
        for array in (self.image, self.labels):
            img = sitk.GetImageFromArray(array)
            img.SetSpacing(self.spacing)
            img.SetDirection(self.direction)
            img.SetOrigin(self.origin)
            images.append(img)
        return images[0], images[1]


def _random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation about a random axis by up to ``max_deg`` (Rodrigues); never the identity."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(0.25, 1.0) * max_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)


def _smooth_displacement(rng: np.random.Generator, shape: Sequence[int], amplitude: float) -> np.ndarray:
    """A (3, z, y, x) displacement field: coarse 4^3 noise upsampled with cubic splines."""
    coarse = rng.normal(scale=amplitude, size=(3, 4, 4, 4))
    zoom = [s / 4 for s in shape]
    return np.stack([ndimage.zoom(c, zoom, order=3)[: shape[0], : shape[1], : shape[2]] for c in coarse])


def _organ_mask(organ: Organ, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of ``organ`` on the (deformed) normalised grid ``u`` of shape (3, z, y, x)."""
    center = np.array(organ.center) + rng.uniform(-0.04, 0.04, size=3)
    scale = rng.uniform(0.88, 1.12)
    d = u - center[:, None, None, None]
    if organ.tube:
        half_length, radius, bend = organ.radii
        # A curved tube along z: its axis drifts in x with a sine of z.
        x_axis = bend * np.sin(np.pi * d[0] / half_length)
        radial = np.sqrt(d[1] ** 2 + (d[2] - x_axis) ** 2)
        return (radial < radius * scale) & (np.abs(d[0]) < half_length)
    radii = np.array(organ.radii)[:, None, None, None] * scale
    return np.sum((d / radii) ** 2, axis=0) < 1.0


def generate_case(seed: int, case: int, config: PhantomConfig = PhantomConfig()) -> PhantomCase:
    """Generate case number ``case`` of the phantom family ``seed`` (pure function of both)."""
    rng = np.random.default_rng([seed, case])
    shape = tuple(config.shape)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij"))
    u = grid + _smooth_displacement(rng, shape, config.deformation).astype(np.float32)

    # Body: an elliptic cylinder with a fat rim, a spine behind the organs.
    body_r = np.sqrt((u[2] / rng.uniform(0.82, 0.9)) ** 2 + (u[1] / rng.uniform(0.62, 0.7)) ** 2)
    image = np.full(shape, AIR_HU, dtype=np.float32)
    image[body_r < 1.0] = FAT_HU + rng.normal(0, 10)
    image[body_r < 0.88] = SOFT_TISSUE_HU + rng.normal(0, 5)
    spine = np.sqrt(u[2] ** 2 + (u[1] - 0.5) ** 2) < 0.11
    image[spine] = BONE_HU + rng.normal(0, 60)
    # Perirenal fat pads make the adrenal glands visible, as in real CT.
    fat_pad = np.sum(((u - np.array([0.1, 0.3, 0.0])[:, None, None, None]) / np.array(
        [0.4, 0.17, 0.55])[:, None, None, None]) ** 2, axis=0) < 1.0
    image[fat_pad & (body_r < 0.88)] = FAT_HU + 20

    labels = np.zeros(shape, dtype=np.uint8)
    # Later organs overwrite earlier ones, so the tiny structures always stay whole.
    for label, name in enumerate(config.classes, start=1):
        organ = ORGANS[name]
        organ = organ.widened(config.small_structure_scale) if organ.small else organ
        mask = _organ_mask(organ, u, rng) & (body_r < 0.88)
        labels[mask] = label
        image[mask] = organ.hu + rng.normal(0, 8)

    image = ndimage.gaussian_filter(image, sigma=0.6)  # partial-volume blur
    image += rng.normal(0, rng.uniform(*config.noise_hu), size=shape).astype(np.float32)
    image = np.clip(np.round(image), -1024, 3071).astype(np.int16)

    spacing = tuple(float(s) for s in np.round(rng.uniform(*config.spacing_range, size=3), 3))
    direction = tuple(float(v) for v in _random_rotation(rng, config.max_rotation_deg).ravel())
    origin = tuple(float(v) for v in np.round(rng.uniform(-200, 200, size=3), 2))
    return PhantomCase(image, labels, spacing, direction, origin)


def dataset_json(config: PhantomConfig, num_training: int) -> dict:
    """nnU-Net v2 ``dataset.json`` for a phantom set."""
    labels = {"background": 0} | {name: i for i, name in enumerate(config.classes, start=1)}
    return {
        "channel_names": {"0": "CT"},
        "labels": labels,
        "numTraining": num_training,
        "file_ending": ".nii.gz",
        "name": "ReCoKD synthetic CT phantom",
        "description": "Synthetic CT-like phantoms generated by recokd.data.phantom (no real patient data).",
        "licence": "CC0-1.0",
        "reference": "recokd.data.phantom",
    }


def write_dataset(
    out: Path,
    num_cases: int,
    num_test: int = 0,
    seed: int = 0,
    config: PhantomConfig = PhantomConfig(),
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``num_cases`` training and ``num_test`` test cases in nnU-Net v2 raw format.

    Layout: ``out/imagesTr/phantom_XXX_0000.nii.gz``, ``out/labelsTr/phantom_XXX.nii.gz``,
    ``out/dataset.json`` and, with ``num_test > 0``, ``imagesTs``/``labelsTs``. Test cases
    continue the case numbering, so they never coincide with training cases. Returns ``out``.
    """
    if num_cases < 1:
        raise RecokdError(f"Need at least one training case, got {num_cases}.")
    out = Path(out)
    total = num_cases + num_test
    for index in range(total):
        split = "Tr" if index < num_cases else "Ts"
        (out / f"images{split}").mkdir(parents=True, exist_ok=True)
        (out / f"labels{split}").mkdir(parents=True, exist_ok=True)
        image, labels = generate_case(seed, index, config).to_sitk()
        case_id = f"phantom_{index:03d}"
        sitk.WriteImage(image, str(out / f"images{split}" / f"{case_id}_0000.nii.gz"), useCompression=True)
        sitk.WriteImage(labels, str(out / f"labels{split}" / f"{case_id}.nii.gz"), useCompression=True)
        if progress is not None:
            progress(index + 1, total)
    (out / "dataset.json").write_text(json.dumps(dataset_json(config, num_cases), indent=2))
    log.info("Wrote %d training and %d test phantom cases to %s", num_cases, num_test, out)
    return out
