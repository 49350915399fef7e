"""convprop.interop.sklearn.CNNClassifier: scikit-learn's own estimator checks, and real use."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from convprop.data.mnist import load_sample  # noqa: E402
from convprop.interop.sklearn import CNNClassifier  # noqa: E402

# A conv layer of 1x1 kernels: the checks feed data with 1 to 10 features, which become
# 1x1 .. 4x4 images, too small for the paper's 5x5 kernels.  With this spec every check
# applies; none is expected to fail (the dict stays empty on purpose).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks([CNNClassifier(spec="4c1", epochs=20, batch_size=10, lr=2)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def digits():
    data = load_sample()
    return data.train_x[:600], data.train_y[:600], data.test_x[:300], data.test_y[:300]


def test_fit_on_images_and_rows_gives_the_same_network(digits):
    x, y, xt, yt = digits
    opts = dict(spec="4c5-2s", activation="tanh", iterations=120, batch_size=50, seed=1)
    a = CNNClassifier(**opts).fit(x, y)  # (n, 28, 28) uint8
    b = CNNClassifier(**opts).fit(x.reshape(len(x), -1), y)  # (n, 784)
    assert a.n_features_in_ == b.n_features_in_ == 784 and a.image_shape_ == (28, 28)
    for name, value in a.network_.params.items():
        assert np.array_equal(value, b.network_.params[name])
    assert np.array_equal(a.predict(xt), b.predict(xt.reshape(len(xt), -1)))
    assert a.score(xt, yt) > 0.5  # it learned something in 120 iterations
    p = a.predict_proba(xt)
    assert p.shape == (300, 10) and np.allclose(p.sum(axis=1), 1)
    assert np.array_equal(a.classes_[p.argmax(axis=1)], a.predict(xt))


def test_any_labels_map_to_outputs(digits):
    x, y, xt, yt = digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])
    keep = np.isin(y, [1, 7])
    clf = CNNClassifier(spec="2c5-2s", activation="tanh", iterations=40, batch_size=10)
    clf.fit(x[keep], names[y[keep]])
    assert list(clf.classes_) == ["one", "seven"] and clf.network_.n_outputs == 2
    keep_t = np.isin(yt, [1, 7])
    assert clf.score(xt[keep_t], names[yt[keep_t]]) > 0.8


def test_grid_search_and_cross_val_score(digits):
    x, y, _, _ = digits
    base = CNNClassifier(spec="2c5-2s", activation="tanh", iterations=20, batch_size=20)
    scores = cross_val_score(base, x[:300], y[:300], cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    grid = GridSearchCV(base, {"lr": [0.1, 1.0]}, cv=2).fit(x[:300], y[:300])
    assert grid.best_params_["lr"] in (0.1, 1.0)
    assert grid.best_estimator_.get_params()["spec"] == "2c5-2s"


def test_bad_options_are_reported_at_fit():
    clf = CNNClassifier(spec="6x5")
    assert clf.get_params()["spec"] == "6x5"  # __init__ stores, fit validates
    with pytest.raises(Exception, match="6x5"):
        clf.fit(np.zeros((4, 784)), [0, 1, 0, 1])
