"""lightweight_nets: small, fast U-Nets for CPU segmentation, as MONAI-style modules."""

from lightweight_nets import nets  # noqa: F401  (registers every network)
from lightweight_nets.registry import create_net, list_nets, register_net

__version__ = "0.1.0"
__all__ = ["create_net", "list_nets", "register_net", "__version__"]
