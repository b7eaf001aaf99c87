"""The GRU text encoder against `nn.GRU(bidirectional=True)` run on each sentence alone, without padding."""

import torch
from torch import nn

from polymodal.modalities.text import RecurrentTextEncoder
from polymodal.modalities.text.recurrent import reverse_prefix


def _encoder_with_the_weights_of(gru: nn.GRU) -> RecurrentTextEncoder:
    """An encoder given `gru`'s weights under the keys of run folders saved before the directions were split."""
    torch.manual_seed(0)
    encoder = RecurrentTextEncoder(vocab_size=30, out_dim=6, width=8, depth=2).eval()
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("layers.")}
    state.update({f"gru.{k}": v for k, v in gru.state_dict().items()})
    encoder.load_state_dict(state)  # strict: every legacy key must find its place
    return encoder


def test_batch_equals_the_bidirectional_gru_on_each_unpadded_sentence():
    torch.manual_seed(1)
    gru = nn.GRU(8, 4, num_layers=2, batch_first=True, bidirectional=True)
    encoder = _encoder_with_the_weights_of(gru)
    lengths = [5, 2, 7]
    ids = torch.zeros(3, 7, dtype=torch.long)
    mask = torch.zeros(3, 7, dtype=torch.bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, 30, (n,))
        mask[i, :n] = True
    with torch.no_grad():
        out = encoder(ids, mask)
        for i, n in enumerate(lengths):
            states, final = gru(encoder.embed(ids[i:i + 1, :n]))  # (1, n, 8), (2 layers × 2 directions, 1, 4)
            tokens = encoder.proj(encoder.norm(states))[0]
            torch.testing.assert_close(out.tokens[i, :n], tokens, atol=1e-5, rtol=1e-4)
            assert torch.equal(out.tokens[i, n:], torch.zeros(7 - n, 6))
            # the summary: the last layer's forward state after the last word, backward state after the first
            summary = torch.cat([final[-2, 0], final[-1, 0]])
            torch.testing.assert_close(out.pooled[i], encoder.proj(encoder.norm(summary)), atol=1e-5, rtol=1e-4)


def test_reverse_prefix_reverses_only_the_real_tokens():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0]])
    lengths = torch.tensor([3, 2, 1])
    assert reverse_prefix(x, lengths).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [6, 0, 0, 0]]
    features = torch.randn(3, 4, 5)
    assert torch.equal(reverse_prefix(reverse_prefix(features, lengths), lengths), features)


def test_a_warm_start_from_an_older_run_takes_its_gru_weights(tmp_path):
    from polymodal.runfolder import save_state_dict
    from polymodal.training.checkpoint import load_matching_weights

    torch.manual_seed(1)
    gru = nn.GRU(8, 4, num_layers=2, batch_first=True, bidirectional=True)
    old = _encoder_with_the_weights_of(gru)
    state = {f"encoders.text.{k}": v for k, v in old.state_dict().items() if not k.startswith("layers.")}
    state.update({f"encoders.text.gru.{k}": v for k, v in gru.state_dict().items()})
    save_state_dict(state, tmp_path / "model.safetensors")
    torch.manual_seed(2)
    model = nn.ModuleDict({"encoders": nn.ModuleDict({"text": RecurrentTextEncoder(vocab_size=30, out_dim=6, width=8,
                                                                                      depth=2)})})
    warm = load_matching_weights(model, tmp_path / "model.safetensors")
    assert not warm.missing and not warm.unused and not warm.reshaped
    for k, v in old.state_dict().items():
        assert torch.equal(model["encoders"]["text"].state_dict()[k], v), k
