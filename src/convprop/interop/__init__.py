"""Model files and interop: the ``model.npz`` format, export to the MATLAB toolbox,
reading a user's digit images, and the scikit-learn estimator."""
