"""A segmentation-models-pytorch U-Net peer, exported in the venv where it imports (``benchmarks/smp/requirements.txt``,
``make venv-smp``): ``python benchmarks/smp/export.py ENCODER SIZE FOLDER`` with the checkout on ``PYTHONPATH``.

Writes ``FOLDER/net.onnx`` (this project's exporter, as for every other net of ``benchmarks.peers``) and
``FOLDER/check.npz``: a random grey frame, the net's PyTorch fp32 logits for it (the check the exported model must
pass before it is timed), its parameter count and GFLOPs (this project's counter). Random weights: nothing is
downloaded.
"""

import sys
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch

from lightweight_nets.export import export_onnx
from lightweight_nets.profile import count_flops, count_parameters


def main(encoder: str, size: int, folder: Path) -> None:
    torch.manual_seed(0)
    net = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=1, classes=1).eval()
    batch = torch.rand(1, 1, size, size)
    with torch.no_grad():
        logits = net(batch)
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(net, folder / "net.onnx", batch)
    np.savez(
        folder / "check.npz",
        batch=batch.numpy(),
        logits=logits.numpy(),
        parameters=count_parameters(net),
        gflops=count_flops(net, batch) / 1e9,
        torch=torch.__version__,
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
