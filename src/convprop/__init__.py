"""convprop: a CNN for handwritten digits with back-propagation written out by hand.

>>> import convprop
>>> net = convprop.Network.from_spec("6c5-2s-12c5-2s", activation="sigmoid", seed=0)
>>> loss, grads = net.loss_and_grads(x, y)      # doctest: +SKIP
"""

from convprop.activations import get_activation
from convprop.errors import ConvpropError
from convprop.network import Network, parse_spec

__version__ = "0.1.0"

__all__ = ["ConvpropError", "Network", "get_activation", "parse_spec", "__version__"]
