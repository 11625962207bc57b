"""The 3D models in the Deploy app's pipeline: an MR series goes to the hippocampus model and a limb CT series to the
sarcoma model, each segmented as one volume; the SEG has one segment per label on every source slice, the report
the volume of each, and the labels are the ones the model gives the same volume as NIfTI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from test_app_support import SHARED_DATA, dciodvfy_errors, write_mr_series

from lightweight_nets.inference.segment import segment_volume
from lightweight_seg.pipeline import segment_paths

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
STS_DICOM = SHARED_DATA / "sts_dicom"


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / max(a.sum() + b.sum(), 1)


def test_hippocampus_volume_as_a_dicom_mr_series_through_the_app(models, tmp_path):
    """A real hippocampus crop written as a brain MR series (slices in shuffled order): routed to the hippocampus model,
    segmented as one volume, and the SEG's labels, placed by the SEG's own geometry, are the labels the model
    gives the NIfTI volume itself."""
    source = SAMPLES / "hippocampus_mr" / "images" / "hippocampus_165.nii.gz"
    image = sitk.ReadImage(str(source))
    pixels = sitk.GetArrayFromImage(image).astype(np.float64)
    scaled = sitk.GetImageFromArray(np.rint(pixels / pixels.max() * 30000))  # int16 range, as an MR series stores it
    scaled.CopyInformation(image)
    write_mr_series(scaled, tmp_path / "in", body_part="BRAIN")
    result = segment_paths(tmp_path / "in", tmp_path / "out", models=models)
    assert result.errors == [] and result.skipped == []
    (output,) = result.outputs
    assert output.model == "hippocampus_mr"
    seg = hd.seg.segread(output.seg_path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["anterior hippocampus", "posterior hippocampus"]
    assert [
        s.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning
        for s in seg.SegmentSequence
    ] == ["Anterior", "Posterior"]
    assert seg.NumberOfFrames == 2 * image.GetSize()[2]  # every slice, both segments
    assert dciodvfy_errors(output.seg_path) == []
    # the same volume through the bundle's NIfTI path
    spec = models.bundles["hippocampus_mr"]
    nifti = nib.load(str(source))
    volume = np.transpose(sitk.GetArrayFromImage(scaled), (2, 1, 0)).astype(np.float32)
    expected = segment_volume(volume, nifti.affine, models.predictor(spec), spec.preprocessing, spec.postprocessing)
    seg_volume = seg.get_volume(combine_segments=True)
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ seg_volume.affine  # highdicom's affine is LPS
    indices = np.rint(np.linalg.solve(nifti.affine, ras)).astype(int)  # SEG voxel -> NIfTI voxel
    grid = np.indices(seg_volume.array.shape[:3]).reshape(3, -1)
    target = indices[:3, :3] @ grid + indices[:3, 3:4]
    from_seg = np.zeros_like(expected)
    from_seg[tuple(target)] = seg_volume.array.reshape(-1)
    for label in (1, 2):
        assert _dice(from_seg == label, expected == label) > 0.99, label
    report = json.loads(output.report_path.read_text())
    truth = np.rint(np.asarray(nib.load(str(SAMPLES / "hippocampus_mr" / "labels" / source.name)).dataobj))
    for segment, label in zip(report["segments"], (1, 2)):
        assert segment["volume_mm3"] == pytest.approx((expected == label).sum() * 1.0, rel=0.02)
        assert _dice(expected == label, truth == label) > 0.7  # a validation volume, never trained on
    # the measurement SR: one volumetric group per segment, on the SEG segment, its volume the report's
    assert dciodvfy_errors(output.sr_path) == []
    sr = hd.sr.srread(output.sr_path)
    assert sr.content.get_planar_roi_measurement_groups() == []
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert [group.tracking_identifier for group in groups] == ["anterior hippocampus", "posterior hippocampus"]
    for group, segment in zip(groups, report["segments"]):
        assert group.reference_type.meaning == "Referenced Segment"
        reference = group.referenced_segment
        assert reference.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert reference.referenced_segment_numbers == [segment["number"]]
        assert reference.source_series_for_segmentation.value == output.series_uid
        assert [site.value.meaning for site in group.finding_sites] == ["Hippocampus"]
        (volume,) = group.get_measurements()
        assert (volume.name.meaning, volume.value, volume.unit.value) == ("Volume", segment["volume_mm3"], "mm3")


def test_limb_ct_series_goes_to_the_sarcoma_model_and_its_mr_is_skipped(models, tmp_path):
    """A real limb CT and its registered MR T1 (IBSI STS_019, a validation patient): the CT (BodyPartExamined
    EXTREMITY) is segmented by the sarcoma model on every slice; no shipped model is for a limb MR."""
    folder = tmp_path / "in"
    shutil.copytree(STS_DICOM / "STS_019" / "CT" / "image", folder / "ct")
    shutil.copytree(STS_DICOM / "STS_019" / "MR_T1" / "image", folder / "mr")
    result = segment_paths(folder, tmp_path / "out", models=models)
    assert result.errors == []
    (output,) = result.outputs
    assert output.model == "sarcoma_ct"
    ((_, reason),) = result.skipped
    assert "no model for MR/EXTREMITY" in reason
    seg = hd.seg.segread(output.seg_path)
    slices = sorted((folder / "ct").iterdir())
    assert seg.SegmentSequence[0].SegmentLabel == "soft-tissue sarcoma" and seg.NumberOfFrames == len(slices)
    referenced = {uid for *_, uid in seg.get_source_image_uids()}
    assert referenced == {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in slices}
    report = json.loads(output.report_path.read_text())
    (segment,) = report["segments"]
    label = nib.load(str(STS_DICOM / "STS_019" / "CT" / "label.nii.gz"))
    truth_mm3 = float((np.asarray(label.dataobj) > 0).sum() * np.prod(label.header.get_zooms()[:3]))
    # read back on the series grid: each source slice's SEG frame against the same slice of the reference label
    reference = sitk.ReadImage(str(STS_DICOM / "STS_019" / "CT" / "label.nii.gz"))
    truth, predicted = sitk.GetArrayFromImage(reference) > 0, np.zeros(reference.GetSize()[::-1], bool)
    for path in slices:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        k = round(reference.TransformPhysicalPointToContinuousIndex([float(v) for v in ds.ImagePositionPatient])[2])
        predicted[k] = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=[1])[0, ..., 0] > 0
    recall, dice = (predicted & truth).sum() / truth.sum(), _dice(predicted, truth)
    print(
        f"\nSTS_019 CT: predicted {segment['volume_mm3'] / 1000:.1f} mL, reference {truth_mm3 / 1000:.1f} mL, "
        f"Dice {dice:.3f}, reference covered {recall:.0%}"
    )
    assert segment["volume_mm3"] == pytest.approx(predicted.sum() * np.prod(reference.GetSpacing()), rel=1e-3)
    # a tumour-centred-crop model on a wider field over-grows (model card), but it must find the tumour where it is
    assert recall > 0.9 and dice > 0.25
    # the volume as a measurement SR beside the SEG, conformant but for what it copies from the source (its Study ID
    # is 17 characters long)
    assert set(dciodvfy_errors(output.sr_path)) <= set(dciodvfy_errors(slices[0]))
    ((volume,),) = [
        group.get_measurements()
        for group in hd.sr.srread(output.sr_path).content.get_volumetric_roi_measurement_groups()
    ]
    assert (volume.value, volume.unit.value) == (segment["volume_mm3"], "mm3")
