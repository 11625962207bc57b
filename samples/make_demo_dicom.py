"""Make the demo input of ``make demo``: samples/dicom/ with a real fetal-head ultrasound and a real CT series.

* ``us_hc18_006.dcm``: the HC18 image samples/hc18/images/006_HC.png (CC BY 4.0, see samples/hc18/README.md)
  wrapped as an obstetric DICOM Ultrasound Image (BodyPartExamined ABDOMEN, StudyDescription "OB ultrasound",
  as the fetal-head bundle's series rules expect) with its pixel size (samples/hc18/pixel_size_and_hc.csv) as a
  calibrated ultrasound region, so that the app reports the head circumference in mm (sonographer: 67.84 mm).
  JPEG 2000 lossless keeps it small.
* ``sts_019_ct/``: the 47-slice limb CT series of patient STS_019 (TCIA Soft-tissue-Sarcoma via IBSI, CC BY 3.0:
  ``samples/sarcoma_ct/LICENSE.md`` and ``README.md``), BodyPartExamined EXTREMITY, from
  ``../shared/data/sts_dicom``: the sarcoma model's case. STS_019 is in that bundle's validation split.

Run from the repository root: ``.venv/bin/python samples/make_demo_dicom.py``.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import JPEG2000Lossless, UltrasoundImageStorage, generate_uid

SAMPLES = Path(__file__).resolve().parent
STS_CT = SAMPLES.parents[1] / "shared" / "data" / "sts_dicom" / "STS_019" / "CT" / "image"
IMAGE = "006_HC.png"
CM_UNITS = 3  # PhysicalUnitsX/YDirection: centimetres


def ultrasound_dataset(
    pixels: np.ndarray,
    pixel_size_mm: float | None,
    comments: str,
    patient_id: str,
    body_part: str | None,
    study_description: str,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY"),
) -> Dataset:
    """A grey 8-bit image as a single-frame DICOM Ultrasound Image, with one calibrated region covering it where
    ``pixel_size_mm`` is known, and the attributes the bundles' series rules read (BodyPartExamined, left out
    where ``body_part`` is None, StudyDescription, ImageType)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID, ds.SOPInstanceUID = UltrasoundImageStorage, generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Sample^" + patient_id, patient_id, "", "F"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "", "", "1", "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = "US", 1, 1, ""
    ds.ImageType = list(image_type)
    ds.PatientOrientation = ""
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.StudyDescription = study_description
    ds.ImageComments = comments
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "00"
    if pixel_size_mm is not None:
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0  # 2D tissue image
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = ds.Columns - 1, ds.Rows - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = CM_UNITS
        region.PhysicalDeltaX = region.PhysicalDeltaY = pixel_size_mm / 10
        ds.SequenceOfUltrasoundRegions = [region]
    ds.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
    return ds


def main() -> None:
    out = SAMPLES / "dicom"
    out.mkdir(exist_ok=True)
    with open(SAMPLES / "hc18" / "pixel_size_and_hc.csv") as table:
        pixel_size = {row["filename"]: float(row["pixel_size_mm"]) for row in csv.DictReader(table)}
    with Image.open(SAMPLES / "hc18" / "images" / IMAGE) as image:
        pixels = np.asarray(image.convert("L"))
    comments = f"HC18 Grand Challenge image {IMAGE} (CC BY 4.0, doi:10.5281/zenodo.1322001)"
    ultrasound = ultrasound_dataset(
        pixels,
        pixel_size[IMAGE],
        comments,
        "HC18-006",
        "ABDOMEN",
        "OB ultrasound",
        ("ORIGINAL", "PRIMARY", "OBSTETRICAL"),
    )
    ultrasound.save_as(out / "us_hc18_006.dcm", enforce_file_format=True)
    shutil.rmtree(out / "ct5n", ignore_errors=True)  # the earlier demo's CT, of a region no shipped model is for
    shutil.copytree(STS_CT, out / "sts_019_ct", dirs_exist_ok=True)
    print(f"demo DICOM written to {out}")


if __name__ == "__main__":
    main()
