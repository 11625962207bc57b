"""The MONAI Deploy application: SDK DICOM loading and series selection, then our segmentation operator."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from monai.deploy.conditions import CountCondition
from monai.deploy.core import Application
from monai.deploy.operators import DICOMDataLoaderOperator, DICOMSeriesSelectorOperator

from lightweight_seg.dicom_io import DEFAULT_RULES, InputError, find_files, load_rules, one_line, read_headers
from lightweight_seg.operators import SegmentSeriesOperator
from lightweight_seg.routing import ModelRouter

__all__ = ["LightweightSegApp"]


class LightweightSegApp(Application):
    """DICOM folder in (``-i`` / HOLOSCAN_INPUT_PATH), a SEG, overlay and report per segmented series out
    (``-o`` / HOLOSCAN_OUTPUT_PATH), with the model bundle or folder of bundles of ``-m`` / HOLOSCAN_MODEL_PATH:
    each series goes to the bundle whose rules claim it, or to ``force`` (a bundle id) when given.

    The SDK loader is never given the input folder itself: it would follow a link loop forever, block on a FIFO
    and stop the whole run on a dangling link or an unreadable file. The folder is read first
    (:func:`~lightweight_seg.dicom_io.find_files`, :func:`~lightweight_seg.dicom_io.read_headers`: regular files
    only, each once, each parsed to its end and checked) and the loader reads a temporary folder of links to the
    files that passed. What did not pass is in ``input_problems``, one line each; :meth:`close` removes the
    temporary folder."""

    name = "lightweight-seg"
    description = "Small, fast U-Net segmentation of CT, MR and ultrasound DICOM on the CPU, written as DICOM-SEG"
    version = "0.1.0"

    def __init__(
        self,
        sdk_argv: list[str],
        rules: Path = DEFAULT_RULES,
        force: str | None = None,
        keep_all_components: bool = False,
    ):
        self.sdk_argv = sdk_argv  # program name first, then the SDK's flags (-i, -o, -m, ...)
        self.rules = Path(rules)
        self.force, self.keep_all_components = force, keep_all_components
        self.segmenter: SegmentSeriesOperator | None = None
        self.input_folder: Path | None = None
        self.input_files: list[Path] = []
        self.input_problems: list[tuple[str, str]] = []
        self._staged: tempfile.TemporaryDirectory | None = None
        super().__init__()

    def _stage(self) -> tuple[Path, dict[str, str], dict[str, list[str]]]:
        """The files of the input folder that can be segmented, as links in a temporary folder for the SDK
        loader: (that folder, link -> file, series UID -> its files)."""
        self.input_files, self.input_problems = find_files(self.input_folder)
        headers, errors = read_headers(self.input_files)
        self.input_problems += errors
        self._staged = tempfile.TemporaryDirectory(prefix="lightweight-seg-input-")
        originals, expected = {}, {}
        for index, header in enumerate(headers):
            link = os.path.join(self._staged.name, f"{index:06d}.dcm")
            os.symlink(os.path.abspath(header.filename), link)
            originals[link] = str(header.filename)
            expected.setdefault(str(header.SeriesInstanceUID), []).append(str(header.filename))
        return Path(self._staged.name), originals, expected

    def close(self) -> None:
        """Remove the staged folder of links (the input files are untouched)."""
        if self._staged is not None:
            self._staged.cleanup()
            self._staged = None

    def compose(self):
        context = Application.init_app_context(self.sdk_argv)
        load_rules(self.rules)  # a bad rules file fails here with a one-line message, not inside the SDK
        models = ModelRouter.from_path(
            Path(context.model_path), force=self.force, keep_all_components=self.keep_all_components
        )
        self.input_folder = Path(context.input_path)
        if not self.input_folder.is_dir():
            raise InputError(f"{one_line(self.input_folder)}: not a folder (the app reads a folder of DICOM files)")
        staged, originals, expected = self._stage()
        loader = DICOMDataLoaderOperator(
            self, CountCondition(self, 1), input_folder=staged, must_load=False, name="dicom_loader"
        )
        selector = DICOMSeriesSelectorOperator(
            self, rules=self.rules.read_text(), all_matched=True, name="series_selector"
        )
        self.segmenter = SegmentSeriesOperator(
            self,
            output_folder=Path(context.output_path),
            models=models,
            originals=originals,
            expected=expected,
            name="segmenter",
        )
        self.add_flow(loader, selector, {("dicom_study_list", "dicom_study_list")})
        self.add_flow(selector, self.segmenter, {("study_selected_series_list", "study_selected_series_list")})
