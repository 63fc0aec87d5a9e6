"""mlmodel-server: serve one scikit-learn model over HTTP."""

__version__ = "0.1.0"
