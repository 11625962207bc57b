"""The MONAI Deploy application: SDK DICOM loading and series selection, then our segmentation operator."""

from __future__ import annotations

from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

from lightweight_seg.dicom_io import DEFAULT_RULES, InputError, load_rules
from lightweight_seg.operators import SegmentSeriesOperator
from lightweight_seg.routing import ModelRouter

__all__ = ["LightweightSegApp"]


class LightweightSegApp(Application):
    """DICOM folder in (``-i`` / HOLOSCAN_INPUT_PATH), a SEG, overlay and report per segmented series out
    (``-o`` / HOLOSCAN_OUTPUT_PATH), with the model bundle or folder of bundles of ``-m`` / HOLOSCAN_MODEL_PATH:
    each series goes to the bundle whose rules claim it, or to ``force`` (a bundle id) when given."""

    name = "lightweight-seg"
    description = "Small, fast U-Net segmentation of CT, MR and ultrasound DICOM on the CPU, written as DICOM-SEG"
    version = "0.1.0"

    def __init__(self, sdk_argv: list[str], rules: Path = DEFAULT_RULES, force: str | None = None,
                 keep_all_components: bool = False):
        self.sdk_argv = sdk_argv  # program name first, then the SDK's flags (-i, -o, -m, ...)
        self.rules = Path(rules)
        self.force, self.keep_all_components = force, keep_all_components
        self.segmenter: SegmentSeriesOperator | None = None
        self.input_folder: Path | None = None
        super().__init__()

    def compose(self):
        context = Application.init_app_context(self.sdk_argv)
        load_rules(self.rules)  # a bad rules file fails here with a one-line message, not inside the SDK
        models = ModelRouter.from_path(Path(context.model_path), force=self.force,
                                       keep_all_components=self.keep_all_components)
        self.input_folder = Path(context.input_path)
        if not self.input_folder.is_dir():
            raise InputError(f"{self.input_folder}: not a folder (the app reads a folder of DICOM files)")
        loader = DICOMDataLoaderOperator(self, CountCondition(self, 1), input_folder=self.input_folder,
                                         must_load=False, name="dicom_loader")
        selector = DICOMSeriesSelectorOperator(self, rules=self.rules.read_text(), all_matched=True,
                                               name="series_selector")
        self.segmenter = SegmentSeriesOperator(self, output_folder=Path(context.output_path), models=models,
                                               name="segmenter")
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, self.segmenter, {("study_selected_series_list", "study_selected_series_list")})
