"""Tiny, offline stand-ins for tests and fault drills: a 2-layer random BERT with its own WordPiece
vocabulary, and a small labelled JSONL dataset with its taxonomy and dataset card.

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
    folder.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (("train", 96, 1), ("test", 32, 2)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for row in make_texts(n, seed):
                fh.write(json.dumps(row) + "\n")
    (folder / "tiny.tax").write_text(TAXONOMY, encoding="utf-8")
    (folder / "tiny.toml").write_text(
        'name = "tiny"\nformat = "jsonl"\ntaxonomy = "tiny.tax"\n\n[splits]\n'
        'train = "train.jsonl"\ntest = "test.jsonl"\n', encoding="utf-8")
    return folder / "tiny.toml"


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
output_dir = "{folder / 'runs'}"
record_dir = "{folder / 'records'}"
"""
