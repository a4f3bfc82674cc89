"""Tiny, offline stand-ins for tests and fault drills: a 2-layer random BERT with its own WordPiece
vocabulary, and small labelled JSONL datasets with their taxonomies and dataset cards: one
hierarchical (:func:`tiny_dataset`), one with per-label classes (:func:`label_class_dataset`).

Nothing here touches the network or a big encoder.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

WORDS = {  # leaf -> words that signal it
    "animal-cat": ["cat", "meow", "kitten"],
    "animal-dog": ["dog", "bark", "puppy"],
    "plant-tree": ["tree", "oak", "leaf"],
    "plant-rose": ["rose", "petal", "thorn"],
}
FILLER = ["the", "a", "is", "was", "here", "there", "today", "big", "small", "very"]
TAXONOMY = """ROOT
  animal
    animal-cat "cat"
    animal-dog "dog"
  plant
    plant-rose "rose"
    plant-tree "tree"
"""


def make_texts(n: int, seed: int) -> list[dict]:
    """``n`` rows ``{"text", "labels"}``: one or two leaves each, their signal words among fillers."""
    rng = random.Random(seed)
    leaves = sorted(WORDS)
    rows = []
    for _ in range(n):
        labels = rng.sample(leaves, 2 if rng.random() < 0.25 else 1)
        words = [rng.choice(WORDS[lab]) for lab in labels for _ in range(2)]
        words += rng.sample(FILLER, 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def tiny_encoder(folder: Path) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece tokenizer over the vocabulary above."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        {w for ws in WORDS.values() for w in ws} | set(FILLER) | {"new", "words"})
    core = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]",
                                  cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return folder


def tiny_dataset(folder: Path) -> Path:
    """A JSONL dataset (train 96 / test 32) with its TOML card and taxonomy; returns the TOML path."""
    return _jsonl_dataset(folder, "tiny", make_texts, TAXONOMY)


def _jsonl_dataset(folder: Path, name: str, rows, taxonomy: str) -> Path:
    """Train (96 rows, seed 1) and test (32, seed 2) JSONL files from ``rows(n, seed)``, the
    taxonomy ``<name>.tax`` and the card ``<name>.toml`` naming them; returns the card's path."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", 96, 1), ("test", 32, 2)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in rows(n, seed):
                fh.write(json.dumps(row) + "\n")
    (folder / f"{name}.tax").write_text(taxonomy, encoding="utf-8")
    (folder / f"{name}.toml").write_text(
        f'name = "{name}"\nformat = "jsonl"\ntaxonomy = "{name}.tax"\n\n[splits]\n'
        'train = "train.jsonl"\ntest = "test.jsonl"\n', encoding="utf-8")
    return folder / f"{name}.toml"


def tiny_config_text(dataset: Path, encoder: Path, folder: Path, name: str = "tiny-msml") -> str:
    """A small, fast MSML training config over the tiny encoder and dataset."""
    return f"""
name = "{name}"
[data]
dataset = "{dataset}"
dev_fraction = 0.2
max_length = 32
[model]
name = "msml"
encoder = "{encoder}"
layers = [-1, -2]
freeze_embeddings = false
options = {{ filters = 16, tower_dim = 32, dropout = 0.0 }}
[train]
epochs = 2
batch_size = 8
lr = 1e-3
head_lr = 1e-2
threads = 1
keep_last = true
prune_vocab = false
save_dtype = "float32"
output_dir = "{folder / 'runs'}"
record_dir = "{folder / 'records'}"
"""


def tiny_tfidf_config_text(dataset: Path, folder: Path, name: str = "tiny-tfidf") -> str:
    """A TF-IDF config over the tiny dataset, with the dev split of :func:`tiny_config_text`."""
    return f"""
name = "{name}"
[data]
dataset = "{dataset}"
dev_fraction = 0.2
[model]
name = "tfidf"
options = {{ analyzer = "char_wb", ngram_range = [1, 3] }}
[train]
epochs = 1
output_dir = "{folder / 'runs'}"
record_dir = "{folder / 'records'}"
"""


# Per-label classes (docs/label-classes.md): each of WORDS' four concepts is a label whose intensity
# is how many of its words a text holds; the words stay in the tiny encoder's vocabulary.
INTENSITIES = ("none", "weak", "medium", "strong")     # class index = number of signal words
CLASS_LABELS = {leaf.split("-")[1]: words for leaf, words in WORDS.items()}
LABEL_CLASS_TAXONOMY = "ROOT\n" + "".join(
    f"  {label} !exclusive\n" + "".join(f'    {label}:{c} "{c}"\n' for c in INTENSITIES)
    for label in sorted(CLASS_LABELS))


def make_label_class_texts(n: int, seed: int) -> list[dict]:
    """``n`` rows ``{"text", "labels"}``: one or two labels at a random intensity (weak, medium or
    strong: one, two or three of the label's words), ``label:class`` each, among two fillers.

    Every other label is absent, hence ``none``; every fourth row also says so for one of them
    (``label:none``), which must read the same.
    """
    rng = random.Random(seed)
    labels = sorted(CLASS_LABELS)
    rows = []
    for i in range(n):
        said = rng.sample(labels, 2 if rng.random() < 0.4 else 1)
        level = {lab: rng.randint(1, 3) for lab in said}
        words = [rng.choice(CLASS_LABELS[lab]) for lab in said for _ in range(level[lab])]
        words += rng.sample(FILLER, 2)
        rng.shuffle(words)
        tags = [f"{lab}:{INTENSITIES[level[lab]]}" for lab in said]
        if i % 4 == 0:
            tags.append(rng.choice([lab for lab in labels if lab not in said]) + ":none")
        rows.append({"text": " ".join(words), "labels": tags})
    return rows


def label_class_dataset(folder: Path) -> Path:
    """A JSONL dataset with per-label classes (train 96 / test 32), its TOML card and taxonomy
    (four labels, each ``!exclusive`` over ``none``, ``weak``, ``medium``, ``strong``); returns the
    TOML path."""
    return _jsonl_dataset(folder, "classes", make_label_class_texts, LABEL_CLASS_TAXONOMY)
