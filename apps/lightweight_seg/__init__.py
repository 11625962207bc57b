"""lightweight-seg: a MONAI Deploy application that segments CT, MR and ultrasound DICOM into DICOM-SEG.

Importing the package preloads the CUDA runtime that the Holoscan SDK links against, from the
``nvidia-cuda-runtime`` wheel, so that Holoscan (imported by ``monai`` itself once the Deploy SDK is
installed) loads on machines without a CUDA installation.
"""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path


def _preload_cuda_runtime() -> None:
    """Load libcudart.so.13 globally if the nvidia-cuda-runtime wheel is installed; nothing otherwise."""
    spec = importlib.util.find_spec("nvidia")
    for root in spec.submodule_search_locations if spec else []:
        for library in sorted(Path(root).glob("cu13/lib/libcudart.so.13*")):
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)
            return


_preload_cuda_runtime()
