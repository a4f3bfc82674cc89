"""Quickstart: hmtc as a scikit-learn estimator, on texts and labels held in Python lists.

Fits MSML on two dozen labelled texts (labels are paths: ``animal/cat`` lies under ``animal``),
predicts consistent label sets, scores, saves, loads and clones. The same code is in docs/api.md.

    hmtc encoders install me5-small && python examples/quickstart.py
    python examples/quickstart.py --encoder minilm-l6      # or a local encoder folder or hub id
"""

from __future__ import annotations

import argparse
import tempfile

from sklearn.base import clone

from hmtc import HierarchicalClassifier

TEXTS = [
    "the kitten was very small", "a kitten is here today", "meow said the cat", "the cat is big",
    "a small cat was there", "meow meow today", "the dog was there", "a puppy is here",
    "bark said the big dog", "the puppy was very small", "a dog is here today", "bark bark",
    "the oak was very big", "a leaf is here", "an oak tree today", "the tree was there",
    "a small leaf", "the big oak tree", "a rose is here", "the petal was small", "a thorn today",
    "the rose was very big", "petal and thorn", "a rose there", "a cat and a dog are here",
    "the kitten and the puppy", "a rose under the oak", "a petal on a leaf",
]
LABELS = [
    *["animal/cat"] * 6, *["animal/dog"] * 6, *["plant/tree"] * 6, *["plant/rose"] * 6,
    ["animal/cat", "animal/dog"], ["animal/cat", "animal/dog"], ["plant/rose", "plant/tree"],
    ["plant/rose", "plant/tree"],
]
NEW = ["a puppy would bark", "petal and thorn of a rose", "meow"]


def main(encoder: str, epochs: int) -> None:
    clf = HierarchicalClassifier("msml", encoder, epochs=epochs, max_length=64, dev_fraction=0.25)
    clf.fit(TEXTS, LABELS)                          # builds the taxonomy from the label paths
    print("nodes:", list(clf.classes_))
    print("predicted:", clf.predict(NEW))           # every label's parent is predicted too
    proba = clf.predict_proba(NEW)                  # (texts, nodes), columns in clf.classes_ order
    print("probabilities:", {node: round(float(p), 2) for node, p in zip(clf.classes_, proba[0])})
    print("one text:", clf.predict("a puppy would bark"))       # its labels, not a list of one
    print("top 2 per level:", clf.predict_top_k("meow", k=2))   # [[(id, probability), ...] per level]
    print("leaf micro-F1 on the training texts:", round(clf.score(TEXTS, LABELS), 4))
    print("micro-F1:", round(clf.evaluate(TEXTS, LABELS)["micro_f1"], 4))   # every figure of hmtc eval

    with tempfile.TemporaryDirectory() as tmp:
        folder = clf.save(f"{tmp}/classifier")      # `hmtc predict` and `hmtc serve` take it too
        again = HierarchicalClassifier.load(folder)
        assert again.predict(NEW) == clf.predict(NEW)
    fresh = clone(clf)                              # the same parameters, not fitted
    print("clone:", fresh.get_params()["encoder"], fresh.get_params()["epochs"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="me5-small", help="built-in encoder name, local folder or hub id")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    main(args.encoder, args.epochs)
