"""The GRU text encoder against `nn.GRU` run on each sentence alone, without padding or packing."""

import torch

from polymodal.modalities.text import RecurrentTextEncoder


def test_packed_batch_equals_the_gru_on_each_unpadded_sentence():
    torch.manual_seed(0)
    encoder = RecurrentTextEncoder(vocab_size=30, out_dim=6, width=8, depth=2).eval()
    lengths = [5, 2, 7]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 30, (n,))
        mask[i, :n] = True
    with torch.no_grad():
        out = encoder(ids, mask)
        for i, n in enumerate(lengths):
            states, final = encoder.gru(encoder.embed(ids[i:i + 1, :n]))  # (1, n, 8), (2 layers × 2 directions, 1, 4)
            tokens = encoder.proj(encoder.norm(states))[0]
            torch.testing.assert_close(out.tokens[i, :n], tokens, atol=1e-5, rtol=1e-4)
            assert torch.equal(out.tokens[i, n:], torch.zeros(7 - n, 6))
            # the summary: the last layer's forward state after the last word, backward state after the first
            summary = torch.cat([final[-2, 0], final[-1, 0]])
            torch.testing.assert_close(out.pooled[i], encoder.proj(encoder.norm(summary)), atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(summary[:4], states[0, -1, :4], atol=1e-6, rtol=0)
            torch.testing.assert_close(summary[4:], states[0, 0, 4:], atol=1e-6, rtol=0)
