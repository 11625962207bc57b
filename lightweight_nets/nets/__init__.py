"""The network zoo: one module per paper family. Importing this package registers every network."""

from lightweight_nets.nets.base import UShapedNet
from lightweight_nets.nets.flat_unet import FlatUNet
from lightweight_nets.nets.li_unet import LiUNet
from lightweight_nets.nets.sd_unet import SDUNet
from lightweight_nets.nets.thin_unet import ThinUNet
from lightweight_nets.nets.ulite import ULite

__all__ = ["FlatUNet", "LiUNet", "SDUNet", "ThinUNet", "ULite", "UShapedNet"]
