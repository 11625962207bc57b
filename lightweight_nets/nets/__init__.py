"""The network zoo: one module per paper family. Importing this package registers every network."""

from lightweight_nets.nets.thin_unet import ThinUNet

__all__ = ["ThinUNet"]
