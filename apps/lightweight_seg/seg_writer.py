"""DICOM out: one binary DICOM-SEG per stack, written with highdicom, one segment per label of the bundle (its
label, codes and recommended display colour), the algorithm named by the bundle's metadata.

Two cases highdicom 0.28 does not cover alone, both kept standard-conformant here:

* Images without a Frame of Reference (ultrasound): the SEG gets a Frame of Reference of its own (a new UID,
  which no other object shares) and the Pixel Measures, Plane Orientation (Patient) and Plane Position (Patient)
  functional groups, which the SEG IOD requires once a Frame of Reference is present and which every common
  reader needs to place a frame (dcmqi builds its volume from them, OHIF / cornerstone check the orientation and
  read SliceThickness and SpacingBetweenSlices). The geometry is the image's own pixel grid: rows down, columns
  across (orientation ``1\\0\\0\\0\\1\\0``), PixelSpacing the ultrasound region's calibration (1 mm where the image
  is not calibrated), and frame k of a cine at ``0\\0\\(k-1)s`` with s the row spacing as SliceThickness and
  SpacingBetweenSlices, so that a cine reads as a volume whose slice k is source frame k.
* Multi-frame sources without a Frame of Reference (ultrasound cine) are refused by highdicom, which only
  places frames it can position in space (and reads multi-frame sources as enhanced images with functional
  groups, which Ultrasound Multi-frame is not). Such a SEG is still well defined by the standard: each SEG
  frame names its source frame in the Derivation Image functional group (``ReferencedFrameNumber``), and the
  frames are organised along the cine's time axis by a second dimension, ``TemporalPositionIndex`` in the
  Frame Content functional group. highdicom writes the SEG for frame 1, given a one-frame single-frame view
  of the source; the references are then pointed back at the real SOP class and the remaining frames added
  with the same functional groups, one per segment and source frame. ``ReferencedFrameNumber`` is required
  wherever the referenced instance is a multi-frame image (PS3.3 Table 10-3, Image SOP Instance Reference
  Macro: the condition is on the instance, not its SOP class), so it is also written for a single-frame SOP class
  instance that holds several frames anyway (``NumberOfFrames`` 2 in Ultrasound Image Storage, seen in the
  wild); without it, readers put every mask on frame 1.

The SEG copies the patient's and the study's text from its source. Where the source's SpecificCharacterSet is
one highdicom does not take as it is (code extensions, e.g. ``\\ISO 2022 IR 87`` for Japanese, whose empty first
value the standard allows), the text is decoded and the SEG written in UTF-8 (``ISO_IR 192``), which encodes any of
it.
"""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import UltrasoundImageStorage
from pydicom.valuerep import DSfloat, PersonName

from lightweight_nets.bundle import BundleSpec, Code, Segment
from lightweight_seg.dicom_io import Stack

__all__ = ["SEG_MANUFACTURER", "build_seg"]

SEG_MANUFACTURER = "lightweight-seg"
_HIGHDICOM_CHARACTER_SETS = {value.value for value in hd.valuerep.SpecificCharacterSetValues}
UTF8 = "ISO_IR 192"


# Type 2 in the source images' IODs (present, possibly empty): highdicom copies them into the SEG and stops where one
# is absent, as in many anonymised files. Absent and empty both mean unknown, so an absent one is added empty.
_COPIED_TYPE_2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _type_2_present(source: Dataset) -> None:
    for keyword in _COPIED_TYPE_2:
        if keyword not in source:
            setattr(source, keyword, "")


def _encodable_text(source: Dataset) -> None:
    """Make a source's SpecificCharacterSet one highdicom copies and pydicom can write every copied text in: an
    empty one (the default repertoire) is removed, a single defined term other than ISO_IR 6 kept, anything else
    (code extensions, several values) replaced by UTF-8 after its text has been decoded."""
    value = source.get("SpecificCharacterSet", None)
    if value is None:
        return
    values = [value] if isinstance(value, str) else [str(v) for v in value]
    if not any(v.strip() for v in values):
        del source.SpecificCharacterSet  # empty means the default repertoire; highdicom refuses the empty value
    elif len(values) > 1 or values[0] not in _HIGHDICOM_CHARACTER_SETS:
        source.decode()  # every text element to str, with the character set it was written in
        source.SpecificCharacterSet = UTF8


def _code(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _segment_description(segment: Segment, spec: BundleSpec) -> hd.seg.SegmentDescription:
    description = hd.seg.SegmentDescription(
        segment_number=segment.number,
        segment_label=segment.label,
        segmented_property_category=_code(segment.category),
        segmented_property_type=_code(segment.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=spec.name[:64], version=spec.version[:64], family=codes.DCM.ArtificialIntelligence
        ),
        anatomic_regions=None if segment.anatomic_region is None else [_code(segment.anatomic_region)],
        display_color=hd.color.CIELabColor.from_rgb(*segment.color_rgb),
    )
    if segment.type_modifier is not None:  # highdicom takes no modifier: added to the type item, as PS3.3 allows
        description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            _code(segment.type_modifier)
        ]
    return description


def _one_frame_view(source: Dataset) -> Dataset:
    """The header of a cine as a single-frame ultrasound image, for highdicom to write frame 1 against."""
    view = copy.deepcopy(source)
    for keyword in ("PixelData", "NumberOfFrames", "FrameIncrementPointer", "FrameTime", "FrameTimeVector"):
        if keyword in view:
            delattr(view, keyword)
    view.SOPClassUID = UltrasoundImageStorage
    return view


def _add_cine_frames(seg: hd.seg.Segmentation, labels: np.ndarray, source: Dataset) -> None:
    """Grow a SEG of frame 1 of a cine to all frames: references to the real SOP class, per-frame functional
    groups for each segment naming source frame k (where the SOP class allows frame numbers) and temporal position
    k, a second dimension index for time, and the bit-packed pixel data (segment by segment, as highdicom orders
    frames)."""

    def restore_sop_class(dataset: Dataset, element) -> None:
        if element.keyword == "ReferencedSOPInstanceUID" and element.value == source.SOPInstanceUID:
            dataset.ReferencedSOPClassUID = source.SOPClassUID

    seg.walk(restore_sop_class)
    numbered = "NumberOfFrames" in source  # a multi-frame instance, whatever its SOP class
    time_dimension = copy.deepcopy(seg.DimensionIndexSequence[0])
    time_dimension.DimensionIndexPointer = Tag("TemporalPositionIndex")
    time_dimension.FunctionalGroupPointer = Tag("FrameContentSequence")
    time_dimension.DimensionDescriptionLabel = "Temporal Position Index"
    seg.DimensionIndexSequence.append(time_dimension)
    frames, numbers = [], []
    shared = seg.SharedFunctionalGroupsSequence[0]
    for first in seg.PerFrameFunctionalGroupsSequence:  # one item per segment (shared identification for one)
        identification = first if "SegmentIdentificationSequence" in first else shared
        segment_number = int(identification.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        index_values = first.FrameContentSequence[0].DimensionIndexValues
        segment_index = index_values[0] if isinstance(index_values, MultiValue) else index_values
        for number in range(1, len(labels) + 1):
            item = copy.deepcopy(first)
            if numbered:
                item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber = number
            item.FrameContentSequence[0].DimensionIndexValues = [segment_index, number]
            item.FrameContentSequence[0].TemporalPositionIndex = number
            frames.append(item)
        numbers.append(segment_number)
    seg.PerFrameFunctionalGroupsSequence = frames
    seg.NumberOfFrames = len(frames)
    seg.PixelData = _packed_frames(labels, numbers)


def _packed_frames(labels: np.ndarray, segment_numbers: list[int], frames_at_once: int = 8) -> bytes:
    """The binary frames of each segment in turn (``labels == number``), bit-packed back to back as PS3.5 8.1.1
    says (bit 0 first, no padding between frames) and padded to an even length; made a few frames at a time, so
    that a long cine's masks are never held whole (bits left over from one chunk start the next)."""
    packed, carry = [], np.zeros(0, dtype=bool)
    for number in segment_numbers:
        for start in range(0, len(labels), frames_at_once):
            bits = np.concatenate([carry, (labels[start : start + frames_at_once] == number).ravel()])
            whole = len(bits) - len(bits) % 8
            packed.append(np.packbits(bits[:whole], bitorder="little"))
            carry = bits[whole:]
    packed.append(np.packbits(carry, bitorder="little"))
    data = np.concatenate(packed).tobytes()
    return data + b"\x00" * (len(data) % 2)


def _content_description(spec: BundleSpec) -> str:
    """What the SEG holds and what made it, in the 64 characters ContentDescription (LO) allows."""
    labels = ", ".join(segment.label for segment in spec.segments)
    return f"{labels}: automatic, {spec.name} {spec.version}"[:64]


def _ds(value: float) -> DSfloat:
    return DSfloat(value, auto_format=True)  # at most 16 characters, as DS allows


def _add_pixel_grid_geometry(seg: hd.seg.Segmentation, stack: Stack) -> None:
    """Give the SEG of a stack without Frame of Reference one of its own, on the image's pixel grid: shared Pixel
    Measures and Plane Orientation (Patient), and per frame a Plane Position (Patient) at the source frame's place
    along the stack (see the module docstring)."""
    row_spacing, column_spacing = stack.pixel_spacing_mm or (1.0, 1.0)
    seg.FrameOfReferenceUID = hd.UID()
    seg.PositionReferenceIndicator = ""
    measures = Dataset()
    measures.PixelSpacing = [_ds(row_spacing), _ds(column_spacing)]
    measures.SliceThickness = measures.SpacingBetweenSlices = _ds(row_spacing)
    orientation = Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared = seg.SharedFunctionalGroupsSequence[0]
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):  # segment by segment, each all frames
        position = Dataset()
        position.ImagePositionPatient = [0, 0, _ds(row_spacing * (index % len(stack.frames)))]
        item.PlanePositionSequence = [position]


def build_seg(
    stack: Stack, labels: np.ndarray, spec: BundleSpec, series_number: int, series_description: str
) -> hd.seg.Segmentation:
    """A binary SEG of the label map ``labels`` (uint8 ``(N, H, W)``, one per frame of ``stack``, value k for the
    bundle's segment k) that references each source instance and frame; every frame is kept for every segment,
    empty or not, so that frame i of a segment is frame i of the stack."""
    if labels.shape != stack.frames.shape:
        raise ValueError(f"labels {labels.shape} do not match the frames {stack.frames.shape}")
    for source in stack.sources:
        _type_2_present(source)
        _encodable_text(source)
    sources = [_one_frame_view(stack.sources[0])] if stack.is_cine else stack.sources
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=labels[:1] if stack.is_cine else labels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(segment, spec) for segment in spec.segments],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SEG_MANUFACTURER,
        manufacturer_model_name=spec.id[:64],
        software_versions=spec.version,
        device_serial_number="0",
        series_description=series_description[:64],
        content_description=_content_description(spec),
        content_creator_name=PersonName.from_named_components(family_name=SEG_MANUFACTURER, given_name=spec.id[:64]),
        omit_empty_frames=False,
    )
    if stack.is_cine:
        _add_cine_frames(seg, labels, stack.sources[0])
    if not stack.has_frame_of_reference:
        _add_pixel_grid_geometry(seg, stack)
    ours = [series_description, spec.id, spec.name, spec.version, *(segment.label for segment in spec.segments)]
    if not all(text.isascii() for text in ours) and seg.get("SpecificCharacterSet") != UTF8:
        seg.decode()
        seg.SpecificCharacterSet = UTF8  # the bundle's own text (labels, name) is not in the source's repertoire
    return seg
