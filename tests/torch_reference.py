"""The activations rebuilt in PyTorch, independent of convprop's: the reference the
torch cross-checks (test_torch_crosscheck.py, test_fc.py) differentiate through."""

import torch
import torch.nn.functional as F


def torch_activation(name: str, z, p=None):
    """f(z) for an activation string; ``p`` holds the learnable parameter (per map/unit
    along axis 1, or one value) of ``prelu`` and ``tanh-linear-learned``."""
    base, _, arg = name.partition(":")
    if base == "sigmoid":
        return torch.sigmoid(z)
    if base == "tanh":
        return torch.tanh(z)
    if base == "tanh-linear":
        return torch.tanh(z) + float(arg) * z
    if base == "relu":
        return F.relu(z)
    if base == "leaky-relu":
        return F.leaky_relu(z, negative_slope=float(arg))
    if base == "identity":
        return z
    shape = [1] * z.ndim
    shape[1] = -1
    pp = p.reshape(shape) if p.numel() > 1 else p
    if base == "prelu":
        return torch.where(z >= 0, z, pp * z)
    if base == "tanh-linear-learned":
        return torch.tanh(z) + pp * z
    raise ValueError(name)
