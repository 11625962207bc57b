"""DICOM out: one binary DICOM-SEG per stack, written with highdicom.

Two cases highdicom 0.28 does not cover alone, both kept standard-conformant here:

* Images without a Frame of Reference (ultrasound) need ``PatientOrientation`` in the SEG's General Image
  module (type 2C: present, empty when unknown) because the SEG then has no plane orientation either.
* Multi-frame sources without a Frame of Reference (ultrasound cine) are refused by highdicom, which only
  places frames it can position in space (and reads multi-frame sources as enhanced images with functional
  groups, which Ultrasound Multi-frame is not). Such a SEG is still well defined by the standard: each SEG
  frame names its source frame in the Derivation Image functional group (``ReferencedFrameNumber``), and the
  frames are organised along the cine's time axis by a second dimension, ``TemporalPositionIndex`` in the
  Frame Content functional group. highdicom writes the SEG for frame 1, given a one-frame single-frame view
  of the source; the references are then pointed back at the real SOP class and the remaining frames added
  with the same functional groups, one per source frame. A source whose SOP class is single-frame but that
  holds several frames anyway (seen in the wild) is referenced without frame numbers, as the standard
  forbids them there; its frames stay ordered by the temporal index.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import pack_bits
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import UltrasoundImageStorage, UltrasoundMultiFrameImageStorage

from lightweight_seg.dicom_io import Stack

__all__ = ["SegmentInfo", "FETAL_HEAD", "SEG_MANUFACTURER", "build_seg"]

SEG_MANUFACTURER = "lightweight-seg"


@dataclass(frozen=True)
class SegmentInfo:
    """What the one segment is, and which algorithm made it (model name and version from the bundle)."""

    label: str
    category: hd.sr.CodedConcept | object
    property_type: hd.sr.CodedConcept | object
    algorithm_name: str
    algorithm_version: str


FETAL_HEAD = dict(label="fetal head", category=codes.SCT.AnatomicalStructure, property_type=codes.SCT.Head)


def _segment_description(info: SegmentInfo) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=info.label,
        segmented_property_category=info.category,
        segmented_property_type=info.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=info.algorithm_name, version=info.algorithm_version, family=codes.DCM.ArtificialIntelligence),
    )


def _one_frame_view(source: Dataset) -> Dataset:
    """The header of a cine as a single-frame ultrasound image, for highdicom to write frame 1 against."""
    view = copy.deepcopy(source)
    for keyword in ("PixelData", "NumberOfFrames", "FrameIncrementPointer", "FrameTime", "FrameTimeVector"):
        if keyword in view:
            delattr(view, keyword)
    view.SOPClassUID = UltrasoundImageStorage
    return view


def _add_cine_frames(seg: hd.seg.Segmentation, masks: np.ndarray, source: Dataset) -> None:
    """Grow a SEG of frame 1 of a cine to all frames: references to the real SOP class, per-frame functional
    groups naming source frame k (where the SOP class allows frame numbers) and temporal position k, a second
    dimension index for time, and the bit-packed pixel data."""

    def restore_sop_class(dataset: Dataset, element) -> None:
        if element.keyword == "ReferencedSOPInstanceUID" and element.value == source.SOPInstanceUID:
            dataset.ReferencedSOPClassUID = source.SOPClassUID

    seg.walk(restore_sop_class)
    numbered = source.SOPClassUID == UltrasoundMultiFrameImageStorage
    first = seg.PerFrameFunctionalGroupsSequence[0]
    time_dimension = copy.deepcopy(seg.DimensionIndexSequence[0])
    time_dimension.DimensionIndexPointer = Tag("TemporalPositionIndex")
    time_dimension.FunctionalGroupPointer = Tag("FrameContentSequence")
    time_dimension.DimensionDescriptionLabel = "Temporal Position Index"
    seg.DimensionIndexSequence.append(time_dimension)
    frames = []
    for number in range(1, len(masks) + 1):
        item = copy.deepcopy(first)
        if numbered:
            item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber = number
        item.FrameContentSequence[0].DimensionIndexValues = [1, number]
        item.FrameContentSequence[0].TemporalPositionIndex = number
        frames.append(item)
    seg.PerFrameFunctionalGroupsSequence = frames
    seg.NumberOfFrames = len(masks)
    seg.PixelData = pack_bits(masks.astype(np.uint8))


def build_seg(stack: Stack, masks: np.ndarray, info: SegmentInfo, series_number: int = 9000) -> hd.seg.Segmentation:
    """A binary SEG of ``masks`` (bool ``(N, H, W)``, one per frame of ``stack``) that references each source
    instance and frame; every frame is kept, empty or not, so that frame i of the SEG is frame i of the stack."""
    if masks.shape != stack.frames.shape:
        raise ValueError(f"masks {masks.shape} do not match the frames {stack.frames.shape}")
    sources = [_one_frame_view(stack.sources[0])] if stack.is_cine else stack.sources
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=masks[:1] if stack.is_cine else masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_segment_description(info)],
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=SEG_MANUFACTURER,
        manufacturer_model_name=info.algorithm_name,
        software_versions=info.algorithm_version,
        device_serial_number="0",
        series_description=f"{info.label} ({info.algorithm_name})"[:64],
        omit_empty_frames=False,
    )
    if stack.is_cine:
        _add_cine_frames(seg, masks, stack.sources[0])
    if not stack.has_frame_of_reference:
        seg.PatientOrientation = stack.sources[0].get("PatientOrientation", "")
    return seg
