"""Shared pieces of the Deploy app's tests: the real input files and dciodvfy."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "samples"))
from make_demo_dicom import ultrasound_dataset  # noqa: E402

TEST_FILES = Path(get_testdata_file("MR_small.dcm", download=False)).parent
SINGLE_FILE_INPUTS = [
    "US1_UNCR.dcm",
    "US1_J2KR.dcm",
    "OBXXXX1A.dcm",
    "OBXXXX1A_2frame.dcm",
    "examples_ybr_color.dcm",
    "color3d_jpeg_baseline.dcm",
    "MR_small.dcm",
    "CT_small.dcm",
]
FOLDER_INPUTS = {"CT5N": "dicomdirtests/98892001/CT5N", "MR700": "dicomdirtests/98892003/MR700"}


# OBXXXX1A_2frame holds 2 frames under Ultrasound Image Storage, a single-frame SOP class (dciodvfy flags the source's
# NumberOfFrames). PS3.3 requires ReferencedFrameNumber when the referenced instance is multi-frame, which it is;
# dciodvfy forbids it by the SOP class. The SEG follows the standard's condition, without which every reader puts both
# masks on frame 1 (seg_writer's docstring).
REFERENCED_FRAME_OF_SINGLE_FRAME_CLASS = (
    "Error - Shall not be present for Referenced SOP Class that is not multi-frame - attribute <ReferencedFrameNumber>"
)


def input_path(name: str) -> Path:
    """A real input: a pydicom / pydicom-data file (no download: both ship their files) or a series folder."""
    if name in FOLDER_INPUTS:
        return TEST_FILES / FOLDER_INPUTS[name]
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not available offline"
    return Path(path)


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dciodvfy reports for a DICOM file."""
    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy missing: install dicom3tools (make system-packages)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def write_ultrasound(
    path: Path,
    image: Path,
    body_part: str | None,
    study_description: str = "",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY"),
    pixel_size_mm: float | None = None,
) -> Path:
    """A real image (PNG) as a single-frame DICOM ultrasound with the attributes the bundles route on."""
    with Image.open(image) as picture:
        pixels = np.asarray(picture.convert("L"))
    ds = ultrasound_dataset(
        pixels, pixel_size_mm, f"test image {image.name}", image.stem, body_part, study_description, image_type
    )
    ds.save_as(path, enforce_file_format=True)
    return path


def write_mr_series(image: sitk.Image, folder: Path, body_part: str | None = None) -> None:
    """A volume as a DICOM MR series, one file per slice, files named and written in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = sitk.GetArrayFromImage(image).astype(np.int16)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    order = list(range(pixels.shape[0]))
    random.Random(0).shuffle(order)
    for k in order:
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Volume", "mri", "", "O"
        ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study, "20260101", "120000", "1"
        ds.ReferringPhysicianName, ds.AccessionNumber = "", ""
        ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = "MR", series, 1, k + 1
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator, ds.Manufacturer = frame_of_reference, "", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        if body_part:
            ds.BodyPartExamined = body_part
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = 500, 15, 1
        ds.ImagePositionPatient = list(image.TransformIndexToPhysicalPoint((0, 0, k)))
        ds.ImageOrientationPatient = [*direction[:, 0], *direction[:, 1]]
        ds.PixelSpacing, ds.SliceThickness = [spacing[1], spacing[0]], spacing[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = pixels[k].tobytes()
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
