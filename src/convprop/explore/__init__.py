"""``convprop explore``: back-propagation through the CNN, shown live in the browser.

A small local web app (Starlette on uvicorn) whose page lets a reader draw a digit and
see, computed by convprop's own :meth:`Network.trace`, every layer's feature maps, the
error maps δ of equations (4), (8), (11) and (12), the kernel gradients of equation (13),
and a network trained live in the page (loss curve and gradient-flow diagnostics).

Modules: :mod:`~convprop.explore.payload` (request checking, JSON of a trace),
:mod:`~convprop.explore.state` (the networks the server holds, the default model),
:mod:`~convprop.explore.training` (the one live training job),
:mod:`~convprop.explore.app` (the HTTP routes), :mod:`~convprop.explore.server`
(binding and running).  The page is package data under ``static/``.
"""

from convprop.explore.app import create_app
from convprop.explore.state import Explorer

__all__ = ["Explorer", "create_app"]
