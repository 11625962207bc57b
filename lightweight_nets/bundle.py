"""The one reader of a model bundle's contract: :class:`BundleSpec`.

Each served model is its own MONAI bundle (``bundle/<id>/``). Everything model-specific lives in its
``configs/inference.json`` (network, pre- and post-processing, segments with their codes, colours and measurements,
the codes and units a structured report gives those measurements, series-selection rules) and
``configs/metadata.json`` (name, version, ``network_data_format``), read here with ``monai.bundle.ConfigParser``.
The bundle's own ``run``, evaluation, the Deploy app, the PACS node and the benchmarks all take a model's facts
from this reader, never from constants in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from lightweight_nets.errors import first_line
from lightweight_nets.inference.predictors import BACKENDS, MODEL_SUFFIXES, Predictor, load_predictor
from lightweight_nets.measure import MEASUREMENTS
from lightweight_nets.transforms import Postprocessing, Preprocessing, VolumePreprocessing

__all__ = [
    "BundleError",
    "Code",
    "MeasurementCoding",
    "Segment",
    "BundleSpec",
    "served_backend",
    "load_bundle_predictor",
    "is_bundle",
    "find_bundles",
    "read_bundle_configs",
]

INFERENCE_CONFIG = Path("configs") / "inference.json"
METADATA = Path("configs") / "metadata.json"


class BundleError(ValueError):
    """A bundle that cannot be served, with a one-line message naming the file and the problem."""


@dataclass(frozen=True)
class Code:
    """A coded concept as DICOM writes it: code value, coding scheme designator (e.g. ``SCT``) and code meaning."""

    value: str
    scheme: str
    meaning: str

    @classmethod
    def of(cls, config: Code | dict, what: str) -> Code:
        if isinstance(config, Code):
            return config
        if not isinstance(config, dict) or set(config) != {"value", "scheme", "meaning"}:
            raise ValueError(f"{what} must be {{'value', 'scheme', 'meaning'}}, got {config!r}")
        if not all(isinstance(v, str) and v for v in config.values()):
            raise ValueError(f"{what}: value, scheme and meaning must be non-empty strings, got {config!r}")
        return cls(**config)


@dataclass(frozen=True)
class MeasurementCoding:
    """How a structured report codes one measurement of :data:`lightweight_nets.measure.MEASUREMENTS`.

    Args:
        concept: what is measured, e.g. LN 11984-2 "Head Circumference" (CID 12005), SCT 42798000 "Area".
        unit: its UCUM unit, in the unit the report gives the value in (e.g. UCUM ``mm``).
        equation: for a value computed by a published equation, the equation (e.g. LN 11932-1
            "HC, Hadlock 1984", CID 12013).
    """

    concept: Code
    unit: Code
    equation: Code | None = None

    @classmethod
    def of(cls, config: dict, what: str) -> MeasurementCoding:
        if not isinstance(config, dict) or not {"concept", "unit"} <= set(config) <= {"concept", "unit", "equation"}:
            raise ValueError(f"{what} must be {{'concept', 'unit'[, 'equation']}}, got {config!r}")
        return cls(
            *(
                None if config.get(key) is None else Code.of(config[key], f"{what} {key}")
                for key in ("concept", "unit", "equation")
            )
        )


@dataclass(frozen=True)
class Segment:
    """One label of a model's output, as the SEG and the report present it.

    Args:
        number: the label value in the model's label map and the SEG's segment number (1, 2, ...).
        label: the segment label shown in viewers.
        category: segmented property category (DICOM CID 7150), e.g. SCT 91723000 "Anatomical Structure".
        type: segmented property type (CID 7151 and others), e.g. SCT 69536005 "Head".
        color_rgb: recommended display colour, 0-255 RGB (written as RecommendedDisplayCIELabValue).
        measurements: names from :data:`lightweight_nets.measure.MEASUREMENTS` that the report gives this segment.
        anatomic_region: where the structure is, when the type alone does not say (e.g. SCT 76752008 "Breast").
        type_modifier: narrows the type (e.g. SCT 255549009 "Anterior" for the head of the hippocampus).
        outline_inset_px: for labels drawn as a filled outline, how far inside their edge (image pixels) lies the
            line that the reference measurement follows: the head ellipse is fitted that far inside the mask.
    """

    number: int
    label: str
    category: Code
    type: Code
    color_rgb: tuple[int, int, int]
    measurements: tuple[str, ...] = ()
    anatomic_region: Code | None = None
    type_modifier: Code | None = None
    outline_inset_px: float = 0.0

    def __post_init__(self):
        if not isinstance(self.number, int) or self.number < 1:
            raise ValueError(f"segment number must be a positive integer, got {self.number!r}")
        if not isinstance(self.label, str) or not self.label or len(self.label) > 64:
            raise ValueError(f"segment {self.number}: label must be 1 to 64 characters, got {self.label!r}")
        object.__setattr__(self, "category", Code.of(self.category, f"segment {self.number} category"))
        object.__setattr__(self, "type", Code.of(self.type, f"segment {self.number} type"))
        for optional in ("anatomic_region", "type_modifier"):
            value = getattr(self, optional)
            if value is not None:
                object.__setattr__(self, optional, Code.of(value, f"segment {self.number} {optional}"))
        rgb = tuple(self.color_rgb)
        if len(rgb) != 3 or not all(isinstance(c, int) and 0 <= c <= 255 for c in rgb):
            raise ValueError(f"segment {self.number}: color_rgb must be three integers 0-255, got {self.color_rgb!r}")
        object.__setattr__(self, "color_rgb", rgb)
        unknown = [m for m in self.measurements if m not in MEASUREMENTS]
        if unknown:
            raise ValueError(
                f"segment {self.number}: unknown measurement {unknown[0]!r}; known: {', '.join(MEASUREMENTS)}"
            )
        object.__setattr__(self, "measurements", tuple(self.measurements))
        if not isinstance(self.outline_inset_px, (int, float)) or not 0 <= self.outline_inset_px < 10:
            raise ValueError(
                f"segment {self.number}: outline_inset_px must be a number of pixels from 0 to 10, "
                f"got {self.outline_inset_px!r}"
            )


def is_bundle(path: str | Path) -> bool:
    """Whether ``path`` is a model bundle folder (it has ``configs/inference.json``)."""
    return (Path(path) / INFERENCE_CONFIG).is_file()


def read_bundle_configs(root: str | Path, names: tuple[str, ...] | list[str] = ("inference.json",)):
    """The bundle's ``configs/<names>`` merged in order by ``monai.bundle.ConfigParser`` (a later file overrides an
    earlier one, as ``monai.bundle run --config_file "[a, b]"`` does), with its metadata as ``_meta_`` and
    ``bundle_root`` set: how every caller reads a bundle's configs."""
    from monai.bundle import ConfigParser

    root = Path(root).resolve()
    parser = ConfigParser()
    parser.read_meta(str(root / METADATA))
    parser.read_config([str(root / "configs" / name) for name in names])
    parser["bundle_root"] = str(root)
    return parser


def _check_backend(backend: str) -> str:
    """``backend`` itself if it names a backend or "auto"; else a ``ValueError`` that lists them."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected auto, {', '.join(BACKENDS)}")
    return backend


def served_backend(bundle_root: str | Path, backend: str = "auto") -> str:
    """The backend that serves a bundle: ``backend`` itself, or for "auto" the first of
    :data:`~lightweight_nets.inference.predictors.BACKENDS` (fastest measured first) whose ``models/model.*`` the
    bundle ships."""
    models = Path(bundle_root) / "models"
    if _check_backend(backend) != "auto":
        return backend
    shipped = [name for name in BACKENDS if (models / f"model{MODEL_SUFFIXES[name]}").is_file()]
    if not shipped:
        raise FileNotFoundError(f"{models}: no model file model({'|'.join(MODEL_SUFFIXES.values())})")
    return shipped[0]


def load_bundle_predictor(
    bundle_root: str | Path, network: nn.Module | None, backend: str = "auto", threads: int | None = None
) -> Predictor:
    """Predictor for a bundle's served model, ``models/model.onnx``, ``.ts`` or ``.pt`` (the MONAI bundle
    specification's names), backend as :func:`served_backend` picks it; the ``.pt`` state dict loads into
    ``network`` (only needed for that backend). :meth:`BundleSpec.load_predictor` builds the network itself."""
    backend = served_backend(bundle_root, backend)
    model_path = Path(bundle_root) / "models" / f"model{MODEL_SUFFIXES[backend]}"
    return load_predictor(model_path, network if backend == "torch" else None, threads)


@dataclass(frozen=True)
class BundleSpec:
    """What one served model is and needs, read from its bundle (see the module docstring).

    ``id`` is the bundle's folder name (what ``--model`` names); ``name`` and ``version`` come from the metadata
    and identify the algorithm in the SEG and the report. ``backend`` is the bundle's own choice of backend
    (``inference.json``'s "backend", measured per model: "auto" is the first shipped of ``BACKENDS``).
    """

    root: Path
    id: str
    name: str
    version: str
    task: str
    preprocessing: Preprocessing | VolumePreprocessing
    postprocessing: Postprocessing
    segments: tuple[Segment, ...]
    series_rules: tuple[dict, ...]
    _parser: object = field(repr=False, compare=False)
    measurement_codes: dict[str, MeasurementCoding] = field(default_factory=dict)
    backend: str = "auto"

    @classmethod
    def load(cls, root: str | Path) -> BundleSpec:
        """Read and check a bundle; :class:`BundleError` names the file and the problem."""
        root = Path(root).resolve()
        config, metadata_path = root / INFERENCE_CONFIG, root / METADATA
        for path in (config, metadata_path):
            if not path.is_file():
                raise BundleError(
                    f"{path}: missing (a model bundle needs configs/inference.json and configs/metadata.json)"
                )
        try:
            parser = read_bundle_configs(root)
        except Exception as error:  # JSON syntax errors and unreadable files
            raise BundleError(
                f"{config.parent}: unreadable bundle config ({first_line(error, innermost=True)})"
            ) from None

        def item(key: str, kind: type | tuple[type, ...]):
            if key not in parser:
                raise BundleError(f"{config}: no {key!r} item")
            try:
                value = parser.get_parsed_content(key)
            except Exception as error:  # bad arguments of a _target_ component raise their own types
                raise BundleError(f"{config}: {key}: {first_line(error, innermost=True)}") from None
            if not isinstance(value, kind):
                raise BundleError(f"{config}: {key} must be {getattr(kind, '__name__', kind)}, got {value!r}")
            return value

        preprocessing = item("preprocessing", (Preprocessing, VolumePreprocessing))
        postprocessing = item("postprocessing", Postprocessing)
        segments = tuple(item("segments", list))
        rules = tuple(item("series_rules", list))
        if not segments or not all(isinstance(s, Segment) for s in segments):
            raise BundleError(f"{config}: segments must be a non-empty list of lightweight_nets.bundle.Segment")
        if [s.number for s in segments] != list(range(1, len(segments) + 1)):
            raise BundleError(f"{config}: segments must be numbered 1, 2, ... in order")
        if postprocessing.activation == "sigmoid" and len(segments) != 1:
            raise BundleError(f"{config}: a sigmoid output has one segment; use softmax for {len(segments)}")
        codes = item("measurement_codes", dict) if any(s.measurements for s in segments) else {}
        try:
            codes = {name: MeasurementCoding.of(coding, f"measurement_codes: {name}") for name, coding in codes.items()}
        except ValueError as error:
            raise BundleError(f"{config}: {error}") from None
        uncoded = [m for s in segments for m in s.measurements if m not in codes]
        if uncoded:
            raise BundleError(
                f"{config}: measurement_codes: no codes for {uncoded[0]!r} (concept and unit, for the "
                "structured report)"
            )
        for rule in rules:
            if not isinstance(rule, dict) or not isinstance(rule.get("conditions"), dict) or not rule["conditions"]:
                raise BundleError(
                    f"{config}: series_rules: every rule needs a name and non-empty conditions, got {rule!r}"
                )
        backend = item("backend", str) if "backend" in parser else "auto"
        try:
            _check_backend(backend)
        except ValueError as error:
            raise BundleError(f"{config}: backend: {error}") from None
        metadata = parser.get("_meta_", {})
        spec = cls(
            root=root,
            id=root.name,
            name=str(metadata.get("name", root.name)),
            version=str(metadata.get("version", "unknown")),
            task=str(metadata.get("task", "")),
            preprocessing=preprocessing,
            postprocessing=postprocessing,
            segments=segments,
            series_rules=rules,
            _parser=parser,
            measurement_codes=codes,
            backend=backend,
        )
        spec._check_network_data_format(metadata.get("network_data_format", {}), metadata_path)
        return spec

    def _check_network_data_format(self, data_format: dict, path: Path) -> None:
        """The metadata describes the same input grid and output channels as the inference config."""
        try:
            inputs = data_format["inputs"]["image"]["spatial_shape"]
            outputs = data_format["outputs"]["pred"]["num_channels"]
        except (KeyError, TypeError):
            raise BundleError(
                f"{path}: network_data_format needs inputs.image.spatial_shape and outputs.pred.num_channels"
            ) from None
        if tuple(inputs) != self.preprocessing.spatial_size:
            raise BundleError(
                f"{path}: network_data_format input {list(inputs)} differs from inference.json "
                f"preprocessing {list(self.preprocessing.spatial_size)}"
            )
        expected = self.postprocessing.output_channels(len(self.segments))
        if outputs != expected:
            raise BundleError(
                f"{path}: network_data_format output has {outputs} channels; {len(self.segments)} "
                f"segment(s) with {self.postprocessing.activation} need {expected}"
            )

    def network(self) -> nn.Module:
        """The network that ``network_def`` builds (untrained; the weights are loaded by :meth:`load_predictor`)."""
        try:
            return self._parser.get_parsed_content("network_def")
        except Exception as error:
            raise BundleError(
                f"{self.root / INFERENCE_CONFIG}: network_def: {first_line(error, innermost=True)}"
            ) from None

    @property
    def network_config(self) -> dict:
        """The raw ``network_def`` config (e.g. ``{"_target_": "lightweight_nets.create_net", "name": ...}``)."""
        return dict(self._parser.get("network_def", {}))

    @property
    def teacher_config(self) -> dict:
        """The raw ``teacher_def`` of ``configs/distill.json``, or {} for a bundle that is not distilled."""
        from monai.bundle import ConfigParser

        distill = self.root / "configs" / "distill.json"
        return dict(ConfigParser.load_config_file(str(distill)).get("teacher_def", {})) if distill.is_file() else {}

    def served_backend(self, backend: str = "auto") -> str:
        """The backend that serves this bundle: ``backend``, or for "auto" the bundle's own choice, itself "auto"
        for the first shipped of ``BACKENDS`` (:func:`served_backend`)."""
        return served_backend(self.root, self.backend if backend == "auto" else backend)

    def load_predictor(self, backend: str = "auto", threads: int | None = None) -> Predictor:
        """The served model, backend as :meth:`served_backend` picks it."""
        backend = self.served_backend(backend)
        return load_bundle_predictor(self.root, self.network() if backend == "torch" else None, backend, threads)

    @property
    def spatial_dims(self) -> int:
        """2: the model segments frames (any stack, frame by frame); 3: volumes (positioned slices)."""
        return len(self.preprocessing.spatial_size)


def find_bundles(path: str | Path) -> list[BundleSpec]:
    """The bundles at ``path``: the bundle itself, or every bundle folder directly inside it (sorted by id).
    A sub-folder that is a bundle but cannot be read raises :class:`BundleError`; other folders are ignored."""
    path = Path(path)
    if is_bundle(path):
        return [BundleSpec.load(path)]
    if not path.is_dir():
        raise BundleError(f"{path}: no such model bundle or folder of bundles")
    bundles = [BundleSpec.load(sub) for sub in sorted(path.iterdir()) if sub.is_dir() and is_bundle(sub)]
    if not bundles:
        raise BundleError(f"{path}: not a model bundle (no configs/inference.json) and holds none")
    return bundles
