"""The MONAI Deploy application: SDK DICOM loading and series selection, then our segmentation operator."""

from __future__ import annotations

from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

from lightweight_nets.inference import load_bundle_predictor
from lightweight_seg.dicom_io import DEFAULT_RULES, InputError, load_rules
from lightweight_seg.operators import SegmentSeriesOperator
from lightweight_seg.pipeline import bundle_keeps_largest

__all__ = ["LightweightSegApp"]


class LightweightSegApp(Application):
    """DICOM folder in (``-i`` / HOLOSCAN_INPUT_PATH), a SEG, overlay and report per segmented series out
    (``-o`` / HOLOSCAN_OUTPUT_PATH), with the model bundle of ``-m`` / HOLOSCAN_MODEL_PATH."""

    name = "lightweight-seg"
    description = "Small, fast U-Net segmentation of CT, MR and ultrasound DICOM on the CPU, written as DICOM-SEG"
    version = "0.1.0"

    def __init__(self, sdk_argv: list[str], rules: Path = DEFAULT_RULES, keep_largest: bool | None = None):
        self.sdk_argv = sdk_argv  # program name first, then the SDK's flags (-i, -o, -m, ...)
        self.rules = Path(rules)
        self.keep_largest = keep_largest
        self.segmenter: SegmentSeriesOperator | None = None
        self.input_folder: Path | None = None
        super().__init__()

    def compose(self):
        context = Application.init_app_context(self.sdk_argv)
        load_rules(self.rules)  # a bad rules file fails here with a one-line message, not inside the SDK
        bundle_root = Path(context.model_path)
        self.input_folder = Path(context.input_path)
        if not self.input_folder.is_dir():
            raise InputError(f"{self.input_folder}: not a folder (the app reads a folder of DICOM files)")
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=self.input_folder,
                                         must_load=False, name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=self.rules.read_text(), all_matched=True,
                                               name="series_selector")
        try:
            predictor = load_bundle_predictor(bundle_root)
        except (OSError, ValueError) as err:  # no or unloadable model: one line, not a traceback
            raise InputError(str(err)) from None
        keep_largest = bundle_keeps_largest(bundle_root) if self.keep_largest is None else self.keep_largest
        self.segmenter = SegmentSeriesOperator(self, output_folder=Path(context.output_path), bundle_root=bundle_root,
                                               predictor=predictor, keep_largest=keep_largest, name="segmenter")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, self.segmenter, {("study_selected_series_list", "study_selected_series_list")})
