"""DICOM out: the measurements of one stack as a DICOM Structured Report beside its SEG (TID 1500 Measurement Report,
written with highdicom as a Comprehensive 3D SR), laid out so that OHIF's SR handler lists and draws them.

One measurement group per segment and frame the segment is on (2D measurements), or per segment (a volume):

* TID 1410 (planar ROI) for a frame: its image region is the geometry a viewer draws on the source frame, the fitted
  head ellipse where the head circumference is measured, else the largest diameter (SCOORD POLYLINE, its two end
  points); a frame with neither references its SEG frame instead (Referenced Segmentation Frame). OHIF
  (``cornerstone-dicom-sr``) reads a group's SCOORD as the drawing and every NUM in it as a label ("Head
  Circumference: 176.20 mm").
* The head ellipse is a closed SCOORD POLYLINE of ``ELLIPSE_VERTICES`` points on the fitted ellipse, not a SCOORD
  ELLIPSE: OHIF 3.13 draws an ELLIPSE only when its axes are parallel to the image's rows or columns ("OBLIQUE
  ELLIPSE NOT YET SUPPORTED", nothing drawn, no label), and a fitted head is oblique. Nothing is lost: vertices 0,
  N/4, N/2 and 3N/4 (N = ``ELLIPSE_VERTICES``) are exactly the ends of the major axis, of the minor axis, of the
  major and of the minor axis again, so a reader recovers the ellipse; the polygon's own perimeter and area are
  within 0.1 % and 0.2 % of the ellipse's (the HC is the NUM, computed on the ellipse).
* TID 1411 (volumetric ROI) for a volume: the SEG segment itself (Referenced Segment) with its source series.

Every measurement (TID 300 NUM) names its concept and UCUM unit from the bundle's ``measurement_codes``, its value as
the JSON report gives it, and as its source the SEG frame (for a volume: the SEG segment) it was computed from; a
value computed by a published equation (the gestational age from the head circumference) names the equation
(DCM 121420 "Equation", a code of CID 12013). Each group carries a tracking identifier and UID, the finding (the
segment's property type and category) and the finding site (the segment's anatomic region, else its type, with the
type modifier).
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from lightweight_nets.bundle import BundleSpec, Code, MeasurementCoding, Segment
from lightweight_nets.measure import MEASUREMENT_REPORT_KEYS
from lightweight_seg.dicom_io import Stack
from lightweight_seg.seg_writer import SEG_MANUFACTURER

__all__ = ["SR_SERIES_OFFSET", "ELLIPSE_VERTICES", "ellipse_polygon", "sr_series_identity", "build_sr"]

SR_SERIES_OFFSET = 50  # an SR's SeriesNumber is its SEG's + 50 (a SEG series numbers its stacks 0-49 at most)
ELLIPSE_VERTICES = 64  # points of the head ellipse's polygon, a multiple of 4 (the axis ends are vertices)


def _code(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


@dataclass(frozen=True)
class _SegFrame:
    """Where one SEG frame comes from: its segment, its source instance, and the source frame."""

    number: int  # the SEG frame number (1-based)
    segment: int
    source_uid: str
    source_class: str
    position: int | None  # the source frame: its ReferencedFrameNumber, else its TemporalPositionIndex (a cine)
    source_frame_numbers: list[int] | None  # the ReferencedFrameNumber the SEG gives (a multi-frame SOP class)


def _seg_frames(seg: Dataset) -> list[_SegFrame]:
    """Each SEG frame's segment and source, as its functional groups say (a cine whose SOP class takes no frame
    numbers is ordered by TemporalPositionIndex instead, which is then taken as the frame's position)."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    frames = []
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        identification = item if "SegmentIdentificationSequence" in item else shared
        source = item.DerivationImageSequence[0].SourceImageSequence[0]
        numbered = source.get("ReferencedFrameNumber")
        position = numbered if numbered is not None else item.FrameContentSequence[0].get("TemporalPositionIndex")
        position = position[0] if isinstance(position, MultiValue) else position
        frames.append(
            _SegFrame(
                number,
                int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
                str(source.ReferencedSOPInstanceUID),
                str(source.ReferencedSOPClassUID),
                None if position is None else int(position),
                None if numbered is None else [int(position)],
            )
        )
    return frames


def _seg_frame(frames: list[_SegFrame], stack: Stack, index: int, segment: int) -> _SegFrame:
    """The SEG frame of ``segment`` on frame ``index`` of the stack."""
    source, frame = stack.frame_sources[index]
    for candidate in frames:
        if (
            candidate.segment == segment
            and candidate.source_uid == source.SOPInstanceUID
            and (frame is None or candidate.position == frame)
        ):
            return candidate
    raise ValueError(f"the SEG has no frame of segment {segment} on stack frame {index + 1}")


def _from_seg(seg: Dataset, segment: int, seg_frames: list[int] | None) -> hd.sr.SourceImageForMeasurement:
    """A measurement's source: the SEG frames it was computed from (each a frame of one segment), or for a volume
    the whole segment (a reference names frames or a segment, never both: dciodvfy checks it)."""
    source = hd.sr.SourceImageForMeasurement(seg.SOPClassUID, seg.SOPInstanceUID, seg_frames)
    if seg_frames is None:
        source.ReferencedSOPSequence[0].ReferencedSegmentNumber = segment
    return source


def _segmentation_frame(seg: Dataset, seg_frame: _SegFrame) -> hd.sr.ReferencedSegmentationFrame:
    """The SEG frame a group is about, where it has no geometry to draw. The frame alone names its segment: highdicom
    adds the segment number too, which must not stand beside a frame number (dciodvfy checks it)."""
    where = hd.sr.ReferencedSegmentationFrame(
        seg.SOPClassUID,
        seg.SOPInstanceUID,
        seg_frame.number,
        seg_frame.segment,
        hd.sr.SourceImageForSegmentation(seg_frame.source_class, seg_frame.source_uid, seg_frame.source_frame_numbers),
    )
    del where[0].ReferencedSOPSequence[0].ReferencedSegmentNumber
    return where


def _measurement(coding: MeasurementCoding, value: float, source: hd.sr.SourceImageForMeasurement) -> hd.sr.Measurement:
    measurement = hd.sr.Measurement(
        name=_code(coding.concept), value=float(value), unit=_code(coding.unit), referenced_images=[source]
    )
    if coding.equation is not None:
        measurement[0].ContentSequence.append(
            hd.sr.CodeContentItem(
                name=codes.DCM.Equation,
                value=_code(coding.equation),
                relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD,
            )
        )
    return measurement


def _finding(segment: Segment, spec: BundleSpec, label: str) -> dict:
    """What every group of a segment says about it: tracking, finding, finding site, algorithm."""
    site = segment.anatomic_region or segment.type
    return {
        "tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label[:64]),
        "finding_type": _code(segment.type),
        "finding_category": _code(segment.category),
        "finding_sites": [
            hd.sr.FindingSite(
                _code(site),
                topographical_modifier=None if segment.type_modifier is None else _code(segment.type_modifier),
            )
        ],
        "algorithm_id": hd.sr.AlgorithmIdentification(name=spec.name[:64], version=spec.version[:64]),
    }


def ellipse_polygon(axis_points: np.ndarray) -> np.ndarray:
    """The closed polygon of ``ELLIPSE_VERTICES`` points on an ellipse given as SCOORD ELLIPSE gives it (the major
    axis ends, then the minor axis ends), starting at the first major axis end and passing the first minor axis end
    a quarter of the way round; its last point is its first."""
    major_end, minor_end = axis_points[0], axis_points[2]
    centre = axis_points.mean(axis=0)
    angles = np.linspace(0, 2 * np.pi, ELLIPSE_VERTICES + 1)[:, None]
    polygon = centre + np.cos(angles) * (major_end - centre) + np.sin(angles) * (minor_end - centre)
    polygon[ELLIPSE_VERTICES // 4 :: ELLIPSE_VERTICES // 4] = axis_points[[2, 1, 3, 0]]  # exact, not rounded by cos
    return polygon


def _image_region(values: dict, index: int, source: hd.sr.SourceImageForRegion) -> hd.sr.ImageRegion | None:
    """The geometry a viewer draws for frame ``index``: the head ellipse (as a polygon), else the largest diameter."""
    for key, shape in (("head_ellipse_points", ellipse_polygon), ("largest_diameter_points", np.asarray)):
        points = values[key][index] if key in values else None
        if points is not None:
            return hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, shape(np.array(points, dtype=float)), source)
    return None


def _frame_groups(
    stack: Stack, spec: BundleSpec, seg: Dataset, segment: Segment, values: dict, seg_frames: list[_SegFrame]
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """One TID 1410 group per frame the segment is on, with the per-frame measurements of that frame."""
    names = [
        name
        for name in segment.measurements
        if MEASUREMENT_REPORT_KEYS[name].endswith("_per_frame") and MEASUREMENT_REPORT_KEYS[name] in values
    ]
    groups = []
    for index, pixels in enumerate(values["pixels_per_frame"]):
        measured = [(name, values[MEASUREMENT_REPORT_KEYS[name]][index]) for name in names]
        measured = [(name, value) for name, value in measured if value is not None]
        if not pixels or not measured:
            continue
        seg_frame = _seg_frame(seg_frames, stack, index, segment.number)
        region = _image_region(
            values,
            index,
            hd.sr.SourceImageForRegion(seg_frame.source_class, seg_frame.source_uid, seg_frame.source_frame_numbers),
        )
        where = None if region is not None else _segmentation_frame(seg, seg_frame)
        from_seg = _from_seg(seg, segment.number, [seg_frame.number])
        label = f"{segment.label} frame {index + 1}" if len(stack.frame_sources) > 1 else segment.label
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_region=region,
                referenced_segment=where,
                **_finding(segment, spec, label),
                measurements=[_measurement(spec.measurement_codes[name], value, from_seg) for name, value in measured],
            )
        )
    return groups


def _volume_group(
    stack: Stack, spec: BundleSpec, seg: Dataset, segment: Segment, values: dict
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | None:
    """One TID 1411 group for the measurements of the whole stack (the volume), if the segment is on any frame."""
    measured = [
        (name, values[MEASUREMENT_REPORT_KEYS[name]])
        for name in segment.measurements
        if not MEASUREMENT_REPORT_KEYS[name].endswith("_per_frame") and MEASUREMENT_REPORT_KEYS[name] in values
    ]
    if not values["frames_with_segment"] or not measured:
        return None
    where = hd.sr.ReferencedSegment(
        seg.SOPClassUID,
        seg.SOPInstanceUID,
        segment.number,
        source_series=hd.sr.SourceSeriesForSegmentation(stack.series_uid),
    )
    from_seg = _from_seg(seg, segment.number, None)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        referenced_segment=where,
        **_finding(segment, spec, segment.label),
        measurements=[_measurement(spec.measurement_codes[name], value, from_seg) for name, value in measured],
    )


def sr_series_identity(seg_identity: tuple[int, str]) -> tuple[int, str]:
    """SeriesNumber and SeriesDescription of the SR beside a SEG of that identity."""
    number, description = seg_identity
    return number + SR_SERIES_OFFSET, f"measurements: {description}"[:64]


def build_sr(
    stack: Stack, spec: BundleSpec, seg: Dataset, segments: list[dict], series_number: int, series_description: str
) -> hd.sr.Comprehensive3DSR | None:
    """The Measurement Report of a stack's measurements as :func:`lightweight_seg.report.measurements` gives them
    (``segments``, one dict per segment of the bundle), referencing the source images and the stack's SEG ``seg``
    (as written: the SR references its SOP Instance UID and frames). None when no segment has a measurement on any
    frame: there is nothing to report."""
    seg_frames = _seg_frames(seg)
    groups = []
    for segment, values in zip(spec.segments, segments, strict=True):
        groups += _frame_groups(stack, spec, seg, segment, values, seg_frames)
        volume = _volume_group(stack, spec, seg, segment, values)
        groups += [volume] if volume is not None else []
    if not groups:
        return None
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[SEG_MANUFACTURER, spec.id, spec.version]),
            name=spec.name[:64],
            manufacturer_name=SEG_MANUFACTURER,
            model_name=spec.id[:64],
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        referenced_images=stack.sources,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*stack.sources, seg],
        content=report[0],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SEG_MANUFACTURER,
        is_complete=True,
        series_description=series_description[:64],
    )
