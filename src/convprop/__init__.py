"""convprop: a CNN for handwritten digits with back-propagation written out by hand.

>>> import convprop
>>> data = convprop.load_data("sample")
>>> net = convprop.Network.from_spec("6c5-2s-12c5-2s", activation="sigmoid", seed=0)
>>> loss, grads = net.loss_and_grads(data.train_x[:50] / 255, data.train_y[:50])
"""

from convprop.data import load_data
from convprop.errors import ConvpropError, ModelError
from convprop.interop.model import load_model, save_model
from convprop.maths.activations import get_activation
from convprop.maths.network import Network, parse_spec, set_num_threads
from convprop.training.checkpoint import StopOnSignal
from convprop.training.config import TrainConfig
from convprop.training.jobs import RunResult, resume_training, run_training

__version__ = "0.1.0"

__all__ = ["ConvpropError", "ModelError", "Network", "RunResult", "StopOnSignal", "TrainConfig",
           "get_activation", "load_data", "load_model", "parse_spec", "resume_training",
           "run_training", "save_model", "set_num_threads", "__version__"]
