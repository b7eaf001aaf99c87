"""Generative tasks: ragged targets, the teacher-forced loss, generation over a memory, the metrics."""

import math

import pytest
import torch
import torch.nn.functional as F

from polymodal.metrics import caption_scores, normalise_text, word_error_rate
from polymodal.modalities.base import EncoderOutput
from polymodal.modalities.text.tokenizer import TextTokenizer
from polymodal.models.decoder import TextDecoder
from polymodal.models.splice import media_id
from polymodal.models.output import ModelOutput
from polymodal.tasks import CaptionData, CaptionTask, TranscriptionData

CAPTIONS = ["a red circle", "a blue square to the left of a red circle", "a green triangle"]


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(CAPTIONS, vocab_size=60)


def test_targets_are_framed_and_collate_ragged(tokenizer):
    data = CaptionData(tokenizer=tokenizer, max_length=8)
    short, long = data.target({"text": "a red circle"}), data.target({"text": CAPTIONS[1]})
    image = media_id("image")
    assert short == {"prompt": [image], "answer": [*tokenizer.ids("a red circle"), tokenizer.sep_id]}
    assert len(long["answer"]) == 7 and long["answer"][-1] == tokenizer.sep_id  # truncated, still ended
    batch = data.collate_targets([short, long])
    assert batch["ids"].shape == (2, 9) and batch["mask"].sum(1).tolist() == [6, 9]
    assert batch["ids"][0, :6].tolist() == [tokenizer.cls_id, image, *short["answer"]]
    assert batch["ids"][0, 6:].eq(tokenizer.pad_id).all()
    assert batch["loss_mask"].tolist()[0] == [False, False, True, True, True, True, False, False, False]
    assert batch["prompt"] == [[image], [image]]


def test_prompt_templates_place_media_and_fields(tokenizer):
    data = CaptionData(tokenizer=tokenizer, prompt="what is <image> left of {question}", max_prompt_length=5,
                       inputs={"image": "image", "audio": "audio"})
    ids = data.prompt_ids({"question": "a red circle to the left of"})
    words = lambda text: tokenizer.ids(text)  # noqa: E731
    # audio is not placed, so it goes first; the text is cut to 5 tokens, the placeholder kept
    assert ids == [media_id("audio"), *words("what is"), media_id("image"), *words("left of a")]
    assert "question" in data.fields
    assert data.prompt_from_text("a blue square") == data.prompt_ids({"question": "a blue square"})
    plain = CaptionData(tokenizer=tokenizer, prompt="<image> caption:")
    assert plain.prompt_from_text("a red") == [media_id("image"), *words("caption:"), *words("a red")]
    with pytest.raises(ValueError, match="unknown placeholder <picture>"):
        CaptionData(tokenizer=tokenizer, prompt="<picture> what")
    with pytest.raises(ValueError, match="<image> appears twice"):  # a span per modality and example
        CaptionData(tokenizer=tokenizer, prompt="<image> or <audio> <image>")


def memory_output(batch=2, length=3, width=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    memory = EncoderOutput(tokens=torch.randn(batch, length, width, generator=g),
                           mask=torch.tensor([[True, True, False], [True, True, True]])[:batch],
                           pooled=torch.zeros(batch, width))
    return ModelOutput(modalities={}, pooled=None, memory=memory)


def test_loss_is_next_token_cross_entropy_on_the_answer_only(tokenizer):
    torch.manual_seed(0)
    data = CaptionData(tokenizer=tokenizer, max_length=12, prompt="{question}")
    decoder = TextDecoder(vocab_size=tokenizer.vocab_size, width=16, depth=1, num_heads=2, context_dim=16)
    task = CaptionTask(data, decoder=decoder)
    out = memory_output()
    records = [{"text": c, "question": q} for c, q in zip(CAPTIONS[:2], ["a green", "a blue square"])]
    targets = [data.target(r) for r in records]
    batch = data.collate_targets(targets)
    loss = task(out, batch)["loss"]
    # by hand: the sequence without its placeholder, each answer token (and the end) predicted from the
    # position before it; the prompt is context, not a target
    terms = []
    for row, t in enumerate(targets):
        seq = [tokenizer.cls_id, *[i for i in t["prompt"] if i >= 0], *t["answer"]]
        logits = decoder(torch.tensor([seq]), context=out.memory.tokens[row:row + 1],
                         context_mask=out.memory.mask[row:row + 1])[0]
        first = len(seq) - len(t["answer"])
        terms += [-F.log_softmax(logits[i - 1], -1)[seq[i]] for i in range(first, len(seq))]
    torch.testing.assert_close(loss, torch.stack(terms).mean())
    changed = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    changed["ids"][0, -1] = 7  # a padded position: not a target, and never attended to
    torch.testing.assert_close(task(out, changed)["loss"], loss)


def test_prediction_generates_over_the_memory(tokenizer):
    """The decoder's greedy tokens from the start token, decoded; a different memory changes them."""
    torch.manual_seed(0)
    data = CaptionData(tokenizer=tokenizer, max_length=6)
    decoder = TextDecoder(vocab_size=tokenizer.vocab_size, width=16, depth=1, num_heads=2, context_dim=16).eval()
    task = CaptionTask(data, decoder=decoder)
    with torch.no_grad():  # sharp, memory-dependent predictions from random weights
        for p in (*decoder.stack.blocks[0].cross.parameters(), *decoder.stack.blocks[0].mlp.parameters()):
            p.mul_(30)
    out = memory_output()
    ids = task.generate_ids(out)  # the prompt: [start] and the image's placeholder, which vanishes here
    # greedy by hand: no cache, the whole sequence each step
    for row in range(2):
        seq = [tokenizer.cls_id]
        for _ in range(5):
            logits = decoder(torch.tensor([seq]), context=out.memory.tokens[row:row + 1],
                             context_mask=out.memory.mask[row:row + 1])
            token = int(logits[0, -1].argmax())
            if token == tokenizer.sep_id:
                break
            seq.append(token)
        assert ids[row] == seq[1:]
    assert task.generate_ids(memory_output(seed=1)) != ids


def test_bleu_cider_and_exact_match_on_known_values():
    # identical up to case and punctuation: exact; "a b c d" against "a b c d e": every n-gram precision is
    # 1 and the brevity penalty exp(1 - 5/4) is all of BLEU-4
    perfect = caption_scores(["A red circle, to the left!", "a blue square on top of it"],
                             [["a red circle to the left"], ["a blue square on top of it"]])
    assert perfect["exact_match"] == 1.0 and perfect["bleu4"] == pytest.approx(1.0, abs=1e-6)
    short = caption_scores(["a b c d"], [["a b c d e"]])
    assert short["bleu4"] == pytest.approx(math.exp(1 - 5 / 4), abs=1e-6) and short["exact_match"] == 0.0
    # one word wrong in six: n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths: BLEU-4 is their geometric mean
    one_off = caption_scores(["a b c d e f"], [["a b c d x f"]])
    assert one_off["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-6)
    half = caption_scores(["a red circle", "a red circle"], [["a red circle"], ["a green triangle"]])
    assert half["exact_match"] == 0.5
    assert caption_scores(["x"], [["a red circle", "x"]])["exact_match"] == 1.0  # any reference counts
    # CIDEr: consensus over the corpus; the better captions score higher
    refs = [["a red circle"], ["a green triangle"], ["a blue square to the left of a red circle"]]
    good = caption_scores(["a red circle", "a green triangle", "a blue square to the left of a red circle"], refs)
    bad = caption_scores(["a red circle", "a red circle", "a red circle"], refs)
    # identical captions score 10 per n-gram order that has n-grams (a 3-word caption has no 4-grams):
    # (7.5 + 7.5 + 10) / 3; the all-"a red circle" corpus: pycocoevalcap's CIDEr-D on the same input
    assert good["cider"] == pytest.approx(25 / 3, abs=1e-9)
    assert bad["cider"] == pytest.approx(2.727896556, abs=1e-6)
    with pytest.raises(ValueError, match="2 hypotheses for 1"):
        caption_scores(["a", "b"], [["a"]])


def test_word_error_rate_counts_edits_over_reference_words():
    # "a b c" → "a x c": 1 substitution; "d e" → "": 2 deletions; 3 edits over 5 reference words
    assert word_error_rate(["a x c", ""], ["a b c", "d e"]) == pytest.approx(3 / 5)
    assert word_error_rate(["A B, C!"], ["a b c"]) == 0.0
    assert word_error_rate(["a b c d"], ["a b c"]) == pytest.approx(1 / 3)  # an insertion
    data = TranscriptionData(tokenizer=TextTokenizer.train(CAPTIONS, vocab_size=60))
    metrics = data.metrics(["a red circle", "a blue"], [{"text": "a red circle"}, {"text": "a green triangle"}])
    assert metrics["wer"] == pytest.approx(2 / 6) and metrics["exact_match"] == 0.5


def test_normalise_text():
    assert normalise_text("  A Red-Circle,  to the LEFT.") == "a red circle to the left"
