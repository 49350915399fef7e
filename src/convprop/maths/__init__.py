"""The maths of the paper: activations, layers (forward/backward pairs with a cache),
the numba kernels they call, losses, optimisers, and the network that composes them.

Nothing here imports from the rest of convprop except ``convprop.errors``."""
