"""hmtc: hierarchical multi-label text classification.

``from hmtc import HierarchicalClassifier`` gives the scikit-learn estimator
(:mod:`hmtc.estimator`); it is imported on first use, so ``import hmtc`` stays cheap.
"""

__version__ = "0.1.0"
__all__ = ["HierarchicalClassifier", "__version__"]


def __getattr__(name: str):
    # torch and transformers take seconds to import: only when the estimator is asked for
    if name == "HierarchicalClassifier":
        from .estimator import HierarchicalClassifier
        return HierarchicalClassifier
    raise AttributeError(f"module 'hmtc' has no attribute {name!r}")
