"""Decoding strategies against oracles: exhaustive search, hand-computed filters, sampling frequencies."""

import itertools
import math

import pytest
import torch

from polymodal.generation import GenerationSettings, _sample, generate, left_pad


class Markov:
    """A toy LM whose next-token log-probs depend only on the last token: table[last]."""

    def __init__(self, table: torch.Tensor):
        self.table = table  # (V, V) logits
        self.reorders = self.steps = 0

    def __call__(self, repeat: int):
        return self

    def prefill(self, ids, mask=None):
        return self.table[ids[:, -1]]

    def step(self, ids):
        self.steps += 1
        return self.table[ids]

    def reorder(self, index):
        self.reorders += 1


def sequence_log_prob(table, start, tokens):
    logp, last = 0.0, start
    for t in tokens:
        logp += table[last].log_softmax(-1)[t].item()
        last = t
    return logp


def test_greedy_follows_the_argmax_chain():
    table = torch.tensor([[0., 3., 1.], [0., 0., 5.], [4., 0., 0.]])
    out = generate(Markov(table), torch.tensor([[0], [2]]), None, GenerationSettings(max_new_tokens=4))
    assert out == [[1, 2, 0, 1], [0, 1, 2, 0]]


def test_greedy_cuts_at_the_stop_token_and_stops_early():
    table = torch.tensor([[0., 3., 1.], [0., 0., 5.], [4., 0., 0.]])
    lm = Markov(table)
    out = generate(lm, torch.tensor([[0], [1]]), None, GenerationSettings(max_new_tokens=6, stop_ids=(2,)))
    assert out == [[1], []]
    assert lm.steps == 1  # both rows had ended after the second token: no third step


def test_beam_search_finds_the_exhaustive_best_when_it_keeps_every_sequence():
    """With as many beams as sequences of each length and no length penalty, beam search returns the
    most likely sequence; greedy does not (the first step's best token leads nowhere good)."""
    torch.manual_seed(0)
    vocab, steps = 4, 3
    table = torch.randn(vocab, vocab) * 3
    table[0] = torch.tensor([0.0, 2.0, 1.9, -5.0])  # greedy takes 1 ...
    table[1] = torch.zeros(vocab)  # ... which is flat afterwards,
    table[2] = torch.tensor([-9.0, -9.0, 6.0, -9.0])  # while 2 leads to a near-certain chain
    best = max(itertools.product(range(vocab), repeat=steps), key=lambda s: sequence_log_prob(table, 0, s))
    prompt = torch.tensor([[0]])
    greedy = generate(Markov(table), prompt, None, GenerationSettings(max_new_tokens=steps))
    beam = generate(Markov(table), prompt, None,
                    GenerationSettings(max_new_tokens=steps, num_beams=vocab ** steps, length_penalty=0.0))
    assert beam == [list(best)] and greedy != beam


def test_length_penalty_trades_log_prob_for_length():
    """Stop now (p 0.45) or go on (0.55) to 1, then 2 (0.6) and a certain stop: log p -0.80 against -1.11.
    A penalty of 0 ranks the raw sums (the short one wins); 2 divides by length², -1.11 / 9 > -0.80."""
    table = torch.full((4, 4), -30.0)
    table[0, 3], table[0, 1] = math.log(0.45), math.log(0.55)
    table[1, 2], table[1, 3] = math.log(0.6), math.log(0.4)
    table[2, 3] = 0.0
    prompt = torch.tensor([[0]])
    short = generate(Markov(table), prompt, None,
                     GenerationSettings(max_new_tokens=5, num_beams=2, length_penalty=0.0, stop_ids=(3,)))
    long = generate(Markov(table), prompt, None,
                    GenerationSettings(max_new_tokens=5, num_beams=2, length_penalty=2.0, stop_ids=(3,)))
    assert short == [[]] and long == [[1, 2]]


def test_top_k_and_top_p_keep_the_expected_tokens():
    """probs (0.5, 0.3, 0.15, 0.05): top-p 0.8 keeps the first two (0.5 < 0.8 ≤ 0.8), top-k 3 the first three."""
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    counts = {}
    for name, settings in {"p": GenerationSettings(sample=True, top_p=0.8),
                           "k": GenerationSettings(sample=True, top_k=3)}.items():
        generator = torch.Generator().manual_seed(0)
        draws = torch.cat([_sample(logits.expand(4000, -1), settings, generator) for _ in range(1)])
        counts[name] = torch.bincount(draws, minlength=4).float() / draws.numel()
    torch.testing.assert_close(counts["p"], torch.tensor([0.625, 0.375, 0.0, 0.0]), atol=0.03, rtol=0)
    torch.testing.assert_close(counts["k"], torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95, atol=0.03, rtol=0)


def test_temperature_sharpens_the_distribution():
    logits = torch.tensor([[1.0, 0.0]]).expand(6000, -1)
    draws = _sample(logits, GenerationSettings(sample=True, temperature=0.5), torch.Generator().manual_seed(1))
    expected = torch.tensor([1.0, 0.0]).div(0.5).softmax(-1)[0].item()  # e² / (e² + 1) = 0.881
    assert abs(draws.eq(0).float().mean().item() - expected) < 0.02


def test_sampling_is_seeded_and_top_k_one_is_greedy():
    torch.manual_seed(0)
    table = torch.randn(9, 9)
    prompt = torch.tensor([[0], [4]])
    draw = lambda seed: generate(Markov(table), prompt, None,  # noqa: E731
                                 GenerationSettings(max_new_tokens=8, sample=True, seed=seed))
    assert draw(3) == draw(3) and draw(3) != draw(4)
    greedy = generate(Markov(table), prompt, None, GenerationSettings(max_new_tokens=8))
    assert generate(Markov(table), prompt, None,
                    GenerationSettings(max_new_tokens=8, sample=True, top_k=1, seed=5)) == greedy


def test_left_pad_puts_every_prompt_at_the_right_edge():
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]
    with pytest.raises(ValueError, match="at least one token"):
        left_pad([[1], []], 0)


@pytest.mark.parametrize("kwargs,message", [
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"num_beams": 0}, "num_beams"),
    ({"num_beams": 2, "sample": True}, "not both"), ({"temperature": 0.0}, "temperature"),
    ({"top_p": 0.0}, "top_p"), ({"top_p": 1.5}, "top_p"), ({"top_k": -1}, "top_k"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**kwargs)
