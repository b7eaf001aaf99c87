"""TextTokenizer: training, padding / truncation, save / load, and loading foreign tokenizer.json files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from polymodal.errors import DataError
from polymodal.modalities.text.tokenizer import TextTokenizer

CAPTIONS = [
    "a red circle",
    "a red circle to the left of a blue square",
    "a green triangle, a blue square and a yellow circle from left to right",
    "is there a purple triangle?",
    "what color is the circle?",
]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train(CAPTIONS, vocab_size=200)


def test_special_token_ids(tokenizer: TextTokenizer) -> None:
    vocab = tokenizer.tokenizer.get_vocab()
    assert tokenizer.pad_id == 0 == vocab["[PAD]"]
    specials = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
    assert specials == (vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"])
    assert tokenizer.vocab_size == len(vocab)


def test_training_twice_gives_the_same_ids(tokenizer: TextTokenizer) -> None:
    again = TextTokenizer.train(CAPTIONS, vocab_size=200)
    assert again.tokenizer.get_vocab() == tokenizer.tokenizer.get_vocab()
    assert [tokenizer.tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_vocabulary_learned_by_pair_merges() -> None:
    # words: "ab" x3, "abc" x1 -> pieces a ##b / a ##b ##c; merge (a, ##b) [4], then (ab, ##c) [1]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    alphabet = ["##b", "##c", "a"]

    def vocab(**kwargs) -> list[str]:
        trained = TextTokenizer.train(["ab ab AB", "abc"], **kwargs)
        return [trained.tokenizer.id_to_token(i) for i in range(trained.vocab_size)]

    assert vocab(vocab_size=100) == specials + alphabet + ["ab", "abc"]
    assert vocab(vocab_size=9) == specials + alphabet + ["ab"]
    assert vocab(vocab_size=100, min_frequency=2) == specials + alphabet + ["ab"]


def test_round_trip_and_special_tokens(tokenizer: TextTokenizer) -> None:
    texts = ["A Red Circle to the left of a blue square", "is there a purple triangle?"]
    ids, mask = tokenizer.encode_batch(texts, 64)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape
    assert tokenizer.decode(ids[0][mask[0]]) == "a red circle to the left of a blue square"
    assert tokenizer.decode(ids[1][mask[1]].tolist()) == "is there a purple triangle?"
    lengths = mask.sum(1)
    for row, length in enumerate(lengths.tolist()):
        assert ids[row, 0] == tokenizer.cls_id
        assert ids[row, length - 1] == tokenizer.sep_id


def test_padding_and_mask(tokenizer: TextTokenizer) -> None:
    ids, mask = tokenizer.encode_batch(["a red circle", "a red circle to the left of a blue square"], 64)
    short = len(tokenizer.tokenizer.encode("a red circle").ids)
    long = len(tokenizer.tokenizer.encode("a red circle to the left of a blue square").ids)
    assert ids.shape == (2, long)  # padded to the longest, not to max_length
    assert mask[0].tolist() == [True] * short + [False] * (long - short)
    assert mask[1].all()
    assert (ids[0, short:] == tokenizer.pad_id).all()
    assert tokenizer.encode_batch([], 8)[0].shape == (0, 0)


def test_truncation_keeps_the_end_token(tokenizer: TextTokenizer) -> None:
    full = tokenizer.tokenizer.encode(CAPTIONS[2]).ids
    ids, mask = tokenizer.encode_batch([CAPTIONS[2], "a red circle"], max_length=6)
    assert ids.shape == (2, 6)
    assert ids[0].tolist() == full[:5] + [tokenizer.sep_id]
    assert mask[0].all()


def test_save_load_gives_identical_ids(tokenizer: TextTokenizer, tmp_path: Path) -> None:
    tokenizer.save(tmp_path / "tok" / "tokenizer.json")
    for source in (tmp_path / "tok" / "tokenizer.json", tmp_path / "tok"):
        loaded = TextTokenizer.load(source)
        for a, b in zip(tokenizer.encode_batch(CAPTIONS, 12), loaded.encode_batch(CAPTIONS, 12)):
            assert torch.equal(a, b)
        assert (loaded.pad_id, loaded.cls_id, loaded.sep_id, loaded.mask_id) == (
            tokenizer.pad_id,
            tokenizer.cls_id,
            tokenizer.sep_id,
            tokenizer.mask_id,
        )


def _bert_style_file(path: Path) -> dict[str, int]:
    """A BERT-layout tokenizer.json: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103."""
    vocab = {f"[unused{i}]": i for i in range(1, 100)}
    vocab.update({"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103})
    for word in ["the", "red", "circle", "blue", "square", "?", "##s"]:
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", 102), ("[CLS]", 101))
    tokenizer.save(str(path))
    return vocab


def test_load_bert_style_tokenizer(tmp_path: Path) -> None:
    vocab = _bert_style_file(tmp_path / "tokenizer.json")
    bert = TextTokenizer.load(tmp_path / "tokenizer.json")
    assert (bert.pad_id, bert.cls_id, bert.sep_id, bert.mask_id) == (0, 101, 102, 103)
    ids, mask = bert.encode_batch(["The red circles?", "blue"], max_length=5)
    v = vocab
    assert ids.tolist() == [[101, v["the"], v["red"], v["circle"], 102], [101, v["blue"], 102, 0, 0]]
    assert mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]


def test_load_gpt2_style_tokenizer_falls_back(tmp_path: Path) -> None:
    # Byte-level BPE with only <|endoftext|> as special token, no post-processor, no pad token.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {char: i for i, char in enumerate(alphabet)}
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab, []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    gpt = TextTokenizer.load(tmp_path / "tokenizer.json")
    eot = vocab["<|endoftext|>"]
    assert (gpt.pad_id, gpt.cls_id, gpt.sep_id, gpt.mask_id) == (0, eot, eot, None)
    ids, mask = gpt.encode_batch(["abcdef", "ab"], max_length=4)
    # plain truncation (there is no end token to keep), padded with id 0
    assert ids.tolist() == [[vocab[c] for c in "abcd"], [vocab["a"], vocab["b"], 0, 0]]
    assert mask.sum(1).tolist() == [4, 2]


def test_missing_or_invalid_file_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tokenizer file not found: .*nothing.json"):
        TextTokenizer.load(tmp_path / "nothing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not a tokenizer")
    with pytest.raises(DataError, match="cannot read tokenizer file .*bad.json"):
        TextTokenizer.load(bad)
