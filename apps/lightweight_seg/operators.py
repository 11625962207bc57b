"""The one operator of our own in the Deploy app, a thin adapter from the SDK's selected series to the pipeline.

The SDK's DICOMDataLoaderOperator and DICOMSeriesSelectorOperator are used as they are. Ours routes each selected
series to the bundle whose rules claim it (:class:`~lightweight_seg.routing.ModelRouter`; the SDK serves one
model per operator), and replaces the rest of the SDK chain because DICOMSeriesToVolumeOperator stacks one grey
2D slice per instance (no colour, no multi-frame cine, and it stacks slices of differing orientation),
MonaiBundleInferenceOperator runs a 3D volume through the bundle's own configs instead of our 2D model frame by
frame through the shared transforms, and DICOMSegmentationWriterOperator writes a SEG that dciodvfy rejects
(empty Manufacturer in ContributingEquipmentSequence) and cannot write cine ultrasound.
"""

from __future__ import annotations

from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from lightweight_seg.dicom_io import check_headers, problem
from lightweight_seg.pipeline import RunResult, segment_routed
from lightweight_seg.routing import ModelRouter

__all__ = ["SegmentSeriesOperator"]


class SegmentSeriesOperator(Operator):
    """Segments every series the selector passes on with the model it is routed to: SEG, overlay PNG and JSON
    report per stack into ``output_folder``. Outputs, skipped series and one-line errors accumulate in
    ``self.result`` for the caller's exit code.

    The SDK loader reads a staged folder of links to the files that passed our header check (see
    :class:`~lightweight_seg.app.LightweightSegApp`): ``originals`` maps each link back to the file it stands for,
    so that every message names the user's file, and ``expected`` lists the files of each series, so that one the
    SDK loader leaves out (it keeps one instance per ImagePositionPatient) is named, not lost without a word. A
    series the selector lists twice (two selections match it) is segmented once; ``selected`` holds the series UIDs
    it passed on, so that the caller can name the others as not selected."""

    def __init__(
        self,
        fragment: Fragment,
        *args,
        output_folder: Path,
        models: ModelRouter,
        originals: dict[str, str] | None = None,
        expected: dict[str, list[str]] | None = None,
        **kwargs,
    ):
        self.output_folder = Path(output_folder)
        self.models = models
        self.originals, self.expected = originals or {}, expected or {}
        self.result = RunResult([], [])
        self.selected: set[str] = set()  # series UIDs the selector passed on, each segmented once
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec):
        spec.input("study_selected_series_list")

    def compute(self, op_input, op_output, context):
        for study in op_input.receive("study_selected_series_list") or []:
            for selected in study.selected_series:
                if selected.series.SeriesInstanceUID in self.selected:  # matched by a second selection: once is all
                    continue
                self.selected.add(selected.series.SeriesInstanceUID)
                native = [instance.get_native_sop_instance() for instance in selected.series.get_sop_instances()]
                for ds in native:
                    ds.filename = self.originals.get(str(ds.filename), ds.filename)
                headers, errors = check_headers(native)
                loaded = {str(ds.filename) for ds in native}
                errors += [
                    problem(
                        path,
                        "left out by the SDK's DICOM loader (it keeps one instance per "
                        "ImagePositionPatient of a series)",
                    )
                    for path in self.expected.get(selected.series.SeriesInstanceUID, [])
                    if path not in loaded
                ]
                self.result.errors.extend(errors)
                if headers:
                    self.result.extend(
                        segment_routed(selected.series.SeriesInstanceUID, headers, self.output_folder, self.models)
                    )
