"""A scikit-learn classifier around convprop's network: ``CNNClassifier``.

Needs the optional extra ``pip install 'convprop[sklearn]'`` (scikit-learn).

>>> from convprop.interop.sklearn import CNNClassifier                      # doctest: +SKIP
>>> clf = CNNClassifier(epochs=1).fit(X_train, y_train)            # doctest: +SKIP
>>> clf.score(X_test, y_test)                                       # doctest: +SKIP

The parameters are the options of ``convprop train``, derived from
:class:`~convprop.training.config.TrainConfig` (``spec``, ``activation``, ``lr``,
``batch_size``, ``epochs`` or ``iterations``, ``seed``, ``dtype``, ``loss``,
``optimizer``, ``init``, ``momentum``, ``betas``), keyword-only, plus ``input_shape``.
X is (n, H, W) grey or (n, C, H, W) colour images, or (n, features) rows: with
``input_shape=(C, H, W)`` (or (H, W)) each row is one such image flattened (channel,
row, column); without it a row of H·W = s² features is an s x s image (784 -> 28 x 28,
row-major as MNIST); any other feature count is zero-padded into the smallest square,
so the estimator also runs on tabular data (the conv layers then see the features laid
out in a grid).  uint8 X is scaled by 1/255 like the MNIST loader; other X is used as
given (MNIST-like data should be in [0, 1]).  Labels may be any values (``classes_``);
the network has one output per class.  A batch larger than the training set shrinks to
the training set.  ``predict_proba`` is the network's outputs normalised to sum to 1
per row.
"""

from __future__ import annotations

import math

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("convprop.interop.sklearn needs scikit-learn: pip install "
                      "'convprop[sklearn]'") from exc

import inspect

from convprop.maths.network import Network
from convprop.training.config import TrainConfig, default_of, options
from convprop.training.trainer import to_float, train


def estimator_fields() -> list:
    """The options of TrainConfig that are estimator parameters (metadata ``estimator``)."""
    return [f for f in options(TrainConfig) if f.metadata.get("estimator", True)]


def _init(self, **params) -> None:
    for f in estimator_fields():
        setattr(self, f.name, params.get(f.name, default_of(f)))
    self.input_shape = params.get("input_shape")


# The estimator's parameters are TrainConfig's (scikit-learn reads them from __init__'s
# signature): a new option is a new parameter with no edit here.
_init.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default_of(f))
       for f in estimator_fields()]
    + [inspect.Parameter("input_shape", inspect.Parameter.KEYWORD_ONLY, default=None)])


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """The paper's CNN as a scikit-learn classifier (fit, predict, predict_proba, score).

    Parameters are the options of ``convprop train`` (:class:`TrainConfig`'s fields but
    ``data`` and ``diagnostics``) and ``input_shape``, all keyword-only; see the module
    docstring for how X is read.  Fitted attributes: ``classes_``, ``n_features_in_``,
    ``image_shape_`` (H, W) or (C, H, W), ``network_`` (the trained
    :class:`~convprop.Network`) and ``train_result_``."""

    __init__ = _init

    def fit(self, X, y):
        """Train a fresh network (seeded by ``seed``) on X and y; returns self."""
        X, y, shape = self._validate(X, y, reset=True)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)  # any labels -> 0..K-1
        labels = labels.astype(np.int64)
        params = {f.name: getattr(self, f.name) for f in estimator_fields()}
        params["batch_size"] = min(params["batch_size"], len(X))
        config = TrainConfig(**params).validate()
        net = Network.from_spec(config.spec, config.activation, shape, len(self.classes_),
                                config.seed, config.dtype, config.init, config.loss)
        self.train_result_ = train(net, X, labels, config)
        self.network_ = net
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Network outputs, each row normalised to sum to 1 (columns follow ``classes_``)."""
        out = self._outputs(X)
        out = out - np.minimum(out.min(axis=1, keepdims=True), 0)  # outputs of any loss
        total = out.sum(axis=1, keepdims=True)
        return np.where(total > 0, out / np.where(total > 0, total, 1), 1 / out.shape[1])

    def predict(self, X) -> np.ndarray:
        """The class with the largest network output, for each row of X."""
        best = self._outputs(X).argmax(axis=1)
        return self.classes_[best]

    # ------------------------------------------------------------------ helpers
    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "network_")
        X, _, _ = self._validate(X)
        out = [self.network_.forward(X[i : i + 1000]) for i in range(0, len(X), 1000)]
        return np.concatenate(out).astype(np.float64)

    def _validate(self, X, y=None, reset: bool = False):
        """Validate X (and y, when fitting); return float images (n, H, W) or
        (n, C, H, W), y, and the image shape."""
        from convprop.errors import ConvpropError

        raw = X
        if hasattr(raw, "ndim") and raw.ndim in (3, 4):  # images: flatten, remember shape
            image_shape = tuple(int(d) for d in raw.shape[1:])
            raw = np.asarray(raw).reshape(len(raw), -1)
        else:
            image_shape = None
        if self.input_shape is not None:
            given = tuple(int(d) for d in self.input_shape)
            if len(given) not in (2, 3) or min(given) < 1:
                raise ConvpropError(f"input_shape must be (H, W) or (C, H, W), got "
                                    f"{self.input_shape!r}")
            if image_shape is not None and math.prod(image_shape) != math.prod(given):
                raise ConvpropError(f"X has images of shape {image_shape}, input_shape is "
                                    f"{given}")
            image_shape = given
        uint8 = getattr(raw, "dtype", None) == np.uint8
        dtype = np.uint8 if uint8 else np.float64
        if reset:
            X, y = validate_data(self, raw, y, reset=True, dtype=dtype)
        else:
            X = validate_data(self, raw, reset=False, dtype=dtype)
        X = to_float(X, np.float64)
        if reset:
            d = X.shape[1]
            if image_shape is None:
                s = math.isqrt(d - 1) + 1 if d > 1 else 1
                image_shape = (s, s)
            self.image_shape_ = image_shape
        shape = self.image_shape_
        size = math.prod(shape)
        if self.input_shape is not None and X.shape[1] != size:
            raise ConvpropError(f"X has {X.shape[1]} features, input_shape "
                                f"{tuple(self.input_shape)} needs {size}")
        if X.shape[1] < size:  # features padded into the smallest square
            X = np.hstack([X, np.zeros((len(X), size - X.shape[1]))])
        return X.reshape(len(X), *shape), y, shape
