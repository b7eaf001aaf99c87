"""CTC as a task: the loss against `F.ctc_loss` and against alignments summed by hand, greedy and prefix-beam
decoding on lattices worked by hand and by brute force, joint rescoring's weighting, the data side."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polymodal.modalities.base import EncoderOutput
from polymodal.models.output import ModelOutput
from polymodal.tasks.ctc import CTCData, CTCTask
from polymodal.tasks.ctc_search import greedy_decode, prefix_beam_search


def _identity_task(labels: int, vocab: list[str] | None = None, tokenizer=None, **options) -> CTCTask:
    """A CTC task whose logits are its input tokens (width = blank + characters)."""
    vocab = vocab or [chr(ord("a") + i) for i in range(labels - 1)]
    task = CTCTask(CTCData(vocab=vocab, tokenizer=tokenizer), width=labels, **options)
    with torch.no_grad():
        task.head[1].weight.copy_(torch.eye(labels))
        task.head[1].bias.zero_()
    return task


def _output(tokens: torch.Tensor, lengths: list[int]) -> ModelOutput:
    mask = torch.arange(tokens.shape[1]) < torch.tensor(lengths)[:, None]
    return ModelOutput(modalities={"audio": EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(1))},
                       pooled=None)


def _collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    return tuple(label for i, label in enumerate(path) if label != blank and (i == 0 or label != path[i - 1]))


def _brute_force(probs: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Every labelling's probability: the sum over all T-frame paths that collapse to it."""
    frames, labels = probs.shape
    total: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(labels), repeat=frames):
        p = math.prod(float(probs[t, c]) for t, c in enumerate(path))
        total[_collapse(path)] = total.get(_collapse(path), 0.0) + p
    return total


def test_loss_sums_alignments_by_hand_over_valid_frames_and_averages_the_batch():
    # frames: P(blank) 0.6, P(a) 0.4. Example 0 has 2 valid frames, target "a": paths aa, a_, _a → 0.64.
    # Example 1 has 3 valid frames, target "aa": only a _ a → 0.4 · 0.6 · 0.4 = 0.096. The 4th frame is
    # padding with a huge "a": counted, it would change both.
    frame = torch.tensor([0.6, 0.4]).log()
    tokens = frame.repeat(2, 4, 1)
    tokens[:, 3] = torch.tensor([-30.0, 30.0])
    tokens[0, 2] = torch.tensor([-30.0, 30.0])
    task = _identity_task(2)
    target = task.data.collate_targets([task.data.characters("a"), task.data.characters("aa")])
    loss = task(_output(tokens, [2, 3]), target)["loss"]
    expected = (-math.log(0.64) - math.log(0.096)) / 2  # summed per utterance, averaged over the batch
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_loss_equals_torch_ctc_loss_per_utterance():
    torch.manual_seed(0)
    task = CTCTask(CTCData(vocab=list("abc ")), width=8)
    tokens = torch.randn(3, 12, 8)
    lengths = [12, 9, 5]
    texts = ["ab c", "cab", "a"]
    target = task.data.collate_targets([task.data.characters(t) for t in texts])
    loss = task(_output(tokens, lengths), target)["loss"]
    log_probs = task.head(tokens).log_softmax(-1)
    each = [F.ctc_loss(log_probs[i, : lengths[i], None], torch.tensor([task.data.characters(t)]),
                       torch.tensor([lengths[i]]), torch.tensor([len(t)]), blank=0, reduction="sum")
            for i, t in enumerate(texts)]
    assert loss.item() == pytest.approx(torch.stack(each).mean().item(), rel=1e-5)
    assert each[2].item() == pytest.approx(_brute_force_loss(log_probs[2, :5].detach(), task.data.characters("a")),
                                           rel=1e-5)


def _brute_force_loss(log_probs: torch.Tensor, labels: list[int]) -> float:
    return -math.log(_brute_force(log_probs.exp())[tuple(labels)])


def test_the_loss_falls_when_trained():
    torch.manual_seed(0)
    task = CTCTask(CTCData(vocab=list("ab")), width=6)
    tokens = torch.randn(4, 10, 6, requires_grad=True)
    target = task.data.collate_targets([task.data.characters(t) for t in ["ab", "ba", "aab", "b"]])
    optimiser = torch.optim.Adam([tokens, *task.parameters()], lr=0.1)
    first = None
    for _ in range(60):
        loss = task(_output(tokens, [10, 10, 8, 6]), target)["loss"]
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.05 * first
    assert task.predict_output(_output(tokens.detach(), [10, 10, 8, 6])) == ["ab", "ba", "aab", "b"]


def test_greedy_merges_repeats_then_drops_blanks():
    best = torch.tensor([1, 1, 0, 1, 2, 2, 0])
    log_probs = F.one_hot(best, 3).float().log_softmax(-1)
    assert greedy_decode(log_probs) == [1, 1, 2]


def test_prefix_beam_search_sums_alignments_where_greedy_picks_one_path():
    # two frames of P(blank) 0.6, P(a) 0.4: the best path is "__" (0.36), yet "a" has 0.16 + 0.24 + 0.24
    log_probs = torch.tensor([[0.6, 0.4], [0.6, 0.4]]).log()
    assert greedy_decode(log_probs) == []
    (first, p_first), (second, p_second) = prefix_beam_search(log_probs, beam=4)  # all there are
    assert first == (1,) and math.exp(p_first) == pytest.approx(0.64)
    assert second == () and math.exp(p_second) == pytest.approx(0.36)
    # a beam of one keeps "" after the first frame and never finds "a"
    ((only, p_only),) = prefix_beam_search(log_probs, beam=1)
    assert only == () and math.exp(p_only) == pytest.approx(0.36)


def test_prefix_beam_search_extends_a_repeated_label_only_after_a_blank():
    # three frames of P(blank) = P(a) = 0.5: of the 8 paths, "a_a" alone makes "aa"; "___" makes "";
    # the other 6 make "a"
    log_probs = torch.full((3, 2), 0.5).log()
    found = {prefix: math.exp(score) for prefix, score in prefix_beam_search(log_probs, beam=8)}
    assert found == pytest.approx({(1,): 0.75, (1, 1): 0.125, (): 0.125})


def test_prefix_beam_search_equals_brute_force_with_a_wide_beam():
    torch.manual_seed(3)
    log_probs = torch.randn(5, 3).log_softmax(-1)
    exact = _brute_force(log_probs.exp())
    found = prefix_beam_search(log_probs, beam=len(exact))
    assert {prefix: math.exp(s) for prefix, s in found} == pytest.approx(exact, rel=1e-6)
    assert [prefix for prefix, _ in found] == sorted(exact, key=exact.get, reverse=True)
    # pruning to the 2 likeliest labels a frame keeps the best hypothesis here and only drops mass
    pruned = dict(prefix_beam_search(log_probs, beam=len(exact), prune=2))
    assert all(math.exp(s) <= exact[p] + 1e-9 for p, s in pruned.items())


class _Tokenizer:
    """Characters as ids 3..: enough of a decoder tokenizer for the rescoring."""

    cls_id, sep_id, pad_id = 1, 2, 0

    def ids(self, text: str) -> list[int]:
        return [3 + ord(c) - ord("a") for c in text if c != " "]


class _FavoursB(nn.Module):
    """A decoder whose every next token has logit 5 for "b" (id 4) and 0 for the other 9 ids."""

    def next_logits(self, out, ids, mask):
        logits = torch.zeros(*ids.shape, 10)
        logits[..., 4] = 5.0
        return logits


# three frames over (blank, a, b): CTC hears "ab". P("ab") sums the paths ab_, abb, aab, a_b, _ab:
# .512 + .064 + .008 + .008 + .001 = .593; P("bb") is b_b alone: .001
FRAMES = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.8, 0.1, 0.1]]).log()


@pytest.mark.parametrize("weight, expected", [(0.0, "ab"), (0.5, "ab"), (0.6, "bb"), (1.0, "bb")])
def test_joint_decoding_weighs_ctc_against_the_decoder(weight, expected):
    # CTC: log .593 = -0.523 for "ab", log .001 = -6.908 for "bb". The decoder: log Z = log(e^5 + 9) = 5.059
    # a token, "ab"+end: 5 - 3 log Z = -10.18, "bb"+end: 10 - 3 log Z = -5.18. (1 - w)·CTC + w·decoder
    # prefers "ab" below w = 6.385 / 11.385 = 0.561 and "bb" above it
    task = _identity_task(3, tokenizer=_Tokenizer(), decoder=_FavoursB(), attention_weight=0.5)
    task.attention_weight = weight
    out = _output(FRAMES[None], [3])
    log_probs, frames = task.log_probs(out)
    assert task.rescore(out, log_probs, frames, [["bb", "ab"]]) == [expected]
    # two examples at once, each with its own candidates and frames
    two = _output(torch.stack([FRAMES, FRAMES.flip(1)]), [3, 3])
    log_probs, frames = task.log_probs(two)
    assert task.rescore(two, log_probs, frames, [["ab", "bb"], ["ab"]]) == [expected, "ab"]


def test_joint_decoding_adds_the_decoder_own_transcript_to_the_beam(monkeypatch):
    task = _identity_task(3, tokenizer=_Tokenizer(), decoder=_FavoursB(), attention_weight=1.0)
    monkeypatch.setattr(task, "decoder_guesses", lambda out: ["bb"])  # CTC's beam alone never finds it
    assert "bb" not in [task.data.text(p) for p, _ in prefix_beam_search(FRAMES, beam=2)]
    task.beam, task.prune = 2, None
    assert task.predict_output(_output(FRAMES[None], [3])) == ["bb"]
    task.attention_weight = 0.0
    assert task.predict_output(_output(FRAMES[None], [3])) == ["ab"]


def test_attention_weight_without_a_decoder_is_refused():
    with pytest.raises(ValueError, match="attention_weight > 0 rescores with the model's text decoder"):
        CTCTask(CTCData(vocab=list("ab")), width=3, attention_weight=0.5)


def test_data_side_learns_characters_and_scores_error_rates():
    records = [{"text": "Seven, two!"}, {"text": "nine"}]
    vocab = CTCData.vocab_from(records, {})
    assert vocab == sorted(set("seven two nine"))
    data = CTCData(vocab=vocab)
    assert data.text(data.characters("Seven two")) == "seven two"
    assert data.characters("x") == []  # never seen in training: left out
    batch = data.collate_targets([data.characters("two"), data.characters("nine")])
    assert batch["lengths"].tolist() == [3, 4] and batch["labels"].shape == (2, 4)
    metrics = data.metrics(["seven three", "nine"], [{"text": "seven two"}, {"text": "nine"}])
    assert metrics["wer"] == pytest.approx(1 / 3)  # one substitution in three reference words
    assert metrics["cer"] == pytest.approx(4 / 13)  # "two" → "three": 2 substitutions, 2 insertions; 13 chars
    assert metrics["exact_match"] == 0.5
