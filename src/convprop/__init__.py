"""convprop: a CNN for handwritten digits with back-propagation written out by hand.

>>> import convprop
>>> net = convprop.Network.from_spec("6c5-2s-12c5-2s", activation="sigmoid", seed=0)
>>> loss, grads = net.loss_and_grads(x, y)      # doctest: +SKIP
"""

from convprop.activations import get_activation
from convprop.errors import ConvpropError, ModelError
from convprop.model import load_model, save_model
from convprop.network import Network, parse_spec

__version__ = "0.1.0"

__all__ = ["ConvpropError", "ModelError", "Network", "get_activation", "load_model",
           "parse_spec", "save_model", "__version__"]
