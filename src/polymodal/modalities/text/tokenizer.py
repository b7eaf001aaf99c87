"""Text tokenisation: a thin wrapper over a HF `tokenizers.Tokenizer`.

`TextTokenizer.train` builds a small BERT-style WordPiece tokenizer from captions (lower-case,
accent-stripped, `[CLS] text [SEP]`, the same ids for the same texts); `TextTokenizer.load` reads any `tokenizer.json`, ours or a
pre-trained one (BERT, GPT-2, ...), and finds its special tokens by their usual names.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from polymodal.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] gets id 0
# Usual names of each special token, most specific first; the first one in the vocabulary wins.
_PAD_NAMES = ("[PAD]", "<pad>", "<|pad|>", "<PAD>", "<|padding|>")
_CLS_NAMES = (
    "[CLS]", "<s>", "<cls>", "<|startoftext|>", "<|begin_of_text|>", "<bos>", "<BOS>", "<|endoftext|>"
)
_SEP_NAMES = ("[SEP]", "</s>", "<sep>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<EOS>")
_MASK_NAMES = ("[MASK]", "<mask>", "<MASK>", "<|mask|>")


class TextTokenizer:
    """Turns strings into padded id tensors and back.

    Args:
        tokenizer: a HF `tokenizers.Tokenizer`; its special tokens are looked up by name.

    Attributes:
        pad_id: id used for padding (the tokenizer's pad token, else 0; padded positions are masked).
        cls_id: start token ([CLS], <s>, ...), or None if the tokenizer has none; GPT-2 style tokenizers
            use <|endoftext|> for both start and end.
        sep_id: end token ([SEP], </s>, ...), or None if the tokenizer has none.
        mask_id: [MASK] / <mask> for masked language modelling, or None.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        # a pretrained tokenizer.json may pad every text to a fixed length (MiniLM's: 128) or truncate:
        # `encode_batch` truncates and pads itself, and marks padding in the mask, which baked-in padding
        # would hide
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer = tokenizer
        pad_id = self._find(_PAD_NAMES)
        self.pad_id: int = 0 if pad_id is None else pad_id
        self.cls_id = self._find(_CLS_NAMES)
        self.sep_id = self._find(_SEP_NAMES)
        self.mask_id = self._find(_MASK_NAMES)

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 1000, min_frequency: int = 1) -> TextTokenizer:
        """Train a BERT-style WordPiece tokenizer.

        The vocabulary is learned like HF's `WordPieceTrainer` does (byte-pair merges of the most
        frequent adjacent pieces, "##" marking pieces inside a word), but with ties broken by token
        order rather than hash-map order, so the same texts always give the same ids; HF's trainer
        does not (huggingface/tokenizers#1794), which would make two runs with one seed differ.

        Args:
            texts: training strings (e.g. every caption and question of the train split).
            vocab_size: the largest vocabulary to learn, special tokens included.
            min_frequency: a merge must occur this often to be learned.

        Returns:
            A tokenizer that lower-cases, strips accents, splits on whitespace and punctuation and wraps
            each text as `[CLS] ... [SEP]`; `[PAD]` has id 0.
        """
        tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        word_counts: Counter[str] = Counter()
        for text in texts:
            normalized = tokenizer.normalizer.normalize_str(text)
            word_counts.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normalized))
        vocab = _learn_vocab(word_counts, vocab_size, min_frequency)
        tokenizer.model = models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
        tokenizer.add_special_tokens(list(SPECIAL_TOKENS))  # matched whole in text, dropped by decode
        cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tokenizer.decoder = decoders.WordPiece()
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Load a `tokenizer.json` (or a folder containing one).

        Raises:
            DataError: the file is missing or is not a tokenizer file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise DataError(f"tokenizer file not found: {path}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # the Rust side raises a bare Exception
            raise DataError(f"cannot read tokenizer file {path}: {error}") from None
        return cls(tokenizer)

    @classmethod
    def from_hf(cls, folder: str | Path) -> TextTokenizer:
        """The tokenizer of a Hugging Face model folder (`AutoTokenizer`, offline), with the start, end and
        pad tokens it declares (GPT-2: <|endoftext|> for all three; Llama: <s>, </s>)."""
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read a Hugging Face tokenizer from {folder}: {error}") from None
        backend = getattr(hf, "backend_tokenizer", None)
        if backend is None:
            raise DataError(f"{folder}: the tokenizer has no fast (tokenizers) version; save it with "
                            f"tokenizer.json")
        out = cls(backend)
        start = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
        if start is not None or hf.eos_token_id is not None:  # a causal LM's; BERT declares [CLS] / [SEP]
            out.cls_id, out.sep_id = start, hf.eos_token_id
        else:
            out.cls_id = hf.cls_token_id if hf.cls_token_id is not None else out.cls_id
            out.sep_id = hf.sep_token_id if hf.sep_token_id is not None else out.sep_id
        out.pad_id = hf.pad_token_id if hf.pad_token_id is not None else (hf.eos_token_id or 0)
        out.mask_id = hf.mask_token_id if hf.mask_token_id is not None else out.mask_id
        return out

    def ids(self, text: str) -> list[int]:
        """The ids of `text` alone, without the start and end tokens the tokenizer may add."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as one `tokenizer.json` file at `path` (parent folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included: the embedding table needs this many rows."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode_batch(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise, truncate and pad a batch.

        Texts longer than `max_length` lose tokens from the end, but keep the end token ([SEP]) when
        the tokenizer adds one. The batch is padded with `pad_id` to its longest member.

        Args:
            texts: B strings.
            max_length: the most tokens per text, special tokens included.

        Returns:
            ids: (B, L) long, L <= max_length.
            mask: (B, L) bool, True on real tokens, False on padding.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        rows = []
        for encoding in self.tokenizer.encode_batch(list(texts)):
            ids = encoding.ids
            if len(ids) > max_length:
                # special_tokens_mask marks the tokens the post-processor added, e.g. the final [SEP]
                keep_end = encoding.special_tokens_mask[-1] == 1 and max_length > 1
                ids = ids[: max_length - 1] + ids[-1:] if keep_end else ids[:max_length]
            rows.append(ids)
        length = max((len(ids) for ids in rows), default=0)
        token_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)  # (B, L)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)  # (B, L)
        for row, ids in enumerate(rows):
            token_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = True
        return token_ids, mask

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Turn ids back into text, dropping special tokens ([CLS], [SEP], [PAD], ...).

        Args:
            ids: (L,) ids of one text; pass only the real tokens when the pad id is an ordinary token
                (tokenizers without a pad token pad with id 0).
        """
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def _find(self, names: Sequence[str]) -> int | None:
        for name in names:
            token_id = self.tokenizer.token_to_id(name)
            if token_id is not None:
                return token_id
        return None


def _learn_vocab(word_counts: Counter[str], vocab_size: int, min_frequency: int) -> list[str]:
    """WordPiece vocabulary by byte-pair merges: special tokens, the alphabet, then merges in order.

    A word starts as its characters, all but the first prefixed "##". Each step merges the adjacent
    pair with the highest count over the corpus (ties: the smallest pair), until the vocabulary has
    `vocab_size` tokens or no pair occurs `min_frequency` times.
    """
    pieces = {word: [word[0], *(f"##{char}" for char in word[1:])] for word in sorted(word_counts)}
    vocab = [*SPECIAL_TOKENS]
    vocab += sorted({piece for split in pieces.values() for piece in split} - set(vocab))
    known = set(vocab)
    pair_counts: Counter[tuple[str, str]] = Counter()
    words_with: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for word, split in pieces.items():
        for pair in zip(split, split[1:]):
            pair_counts[pair] += word_counts[word]
            words_with[pair].add(word)
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    while heap and len(vocab) < vocab_size:
        negative_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative_count:
            continue  # stale entry: the count changed after it was pushed
        if -negative_count < min_frequency:
            break
        merged = pair[0] + pair[1][2:]  # "ci" + "##rc" -> "circ"; "##l" + "##e" -> "##le"
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        changed: set[tuple[str, str]] = set()
        for word in sorted(words_with.pop(pair)):
            old, count = pieces[word], word_counts[word]
            new, i = [], 0
            while i < len(old):
                if i + 1 < len(old) and (old[i], old[i + 1]) == pair:
                    new.append(merged)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            for old_pair in zip(old, old[1:]):
                pair_counts[old_pair] -= count
                changed.add(old_pair)
            for new_pair in zip(new, new[1:]):
                pair_counts[new_pair] += count
                words_with[new_pair].add(word)
                changed.add(new_pair)
            pieces[word] = new
        for changed_pair in sorted(changed):
            count = pair_counts[changed_pair]
            if count <= 0:
                del pair_counts[changed_pair]
            elif changed_pair != pair:
                heapq.heappush(heap, (-count, changed_pair))
        pair_counts.pop(pair, None)
    return vocab
