"""Reads a DICOM-SEG with pydicom-seg (run in .venv-pydicom-seg, which has pydicom<3) and writes what it read:
``OUT.npz`` with one ``segment_<n>`` array (frames, rows, columns) per segment, and the spacing and origin.

usage: python read_pydicom_seg.py SEG OUT.npz"""

import sys

import numpy as np
import pydicom
import pydicom_seg

seg_path, out_path = sys.argv[1:]
result = pydicom_seg.SegmentReader().read(pydicom.dcmread(seg_path))
np.savez(
    out_path,
    spacing=np.array(result.spacing),
    origin=np.array(result.origin),
    **{f"segment_{number}": result.segment_data(number) for number in result.available_segments},
)
