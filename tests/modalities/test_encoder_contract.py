"""The contract every modality encoder keeps, checked over all of them at tiny sizes."""

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch import nn

import hf_folders
from graphs import graph_breaks
from polymodal.modalities.base import EncoderOutput, HoldsEncoders, MasksTokens
from polymodal.modalities.pretrained import HFAudioEncoder, HFImageEncoder, HFTextEncoder
from polymodal.modalities.image import CNNImageEncoder, ViTImageEncoder
from polymodal.modalities.image.tokenizer import QuantizedImageEncoder, QuantizedVideoEncoder
from polymodal.modalities.audio.encoders import ConvAudioEncoder, SpectrogramTransformer
from polymodal.modalities.audio.speech import SpeechEncoder
from polymodal.modalities.audio.tokenizer import QuantizedAudioEncoder
from polymodal.modalities.text import RecurrentTextEncoder, TextEncoder
from polymodal.modalities.video.encoders import Conv3DEncoder, FrameEncoder, TubeletViT

B, OUT_DIM, IMAGE = 2, 12, 16
CLS_ID, PAD_ID = 1, 0


def _text_inputs(length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(2, 50, (B, length))
    ids[:, 0] = CLS_ID
    mask = torch.ones(B, length, dtype=torch.bool)
    mask[1, 4:] = False
    return ids.masked_fill(~mask, PAD_ID), mask


def _image_inputs() -> tuple[torch.Tensor]:
    return (torch.randn(B, 3, IMAGE, IMAGE),)


FRAMES, RATE, SECONDS = 4, 8000, 0.5
AUDIO = {"sample_rate": RATE, "duration": SECONDS, "n_mels": 16, "n_fft": 256, "hop_length": 64}


def _video_inputs() -> tuple[torch.Tensor]:
    return (torch.randn(B, FRAMES, 3, IMAGE, IMAGE),)


def _audio_inputs() -> tuple[torch.Tensor]:
    return (torch.randn(B, int(RATE * SECONDS)) * 0.1,)


def _video_audio_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return _video_inputs() + _audio_inputs()


def _cnn_frames(in_channels: int = 3) -> nn.Module:
    return CNNImageEncoder(out_dim=OUT_DIM, image_size=IMAGE, channels=(8, 16), groups=4, in_channels=in_channels)


def _vit_frames(in_channels: int = 3) -> nn.Module:
    return ViTImageEncoder(out_dim=OUT_DIM, image_size=IMAGE, patch_size=8, width=16, depth=1, num_heads=2,
                           in_channels=in_channels)


@dataclass
class Case:
    build: Callable[[], nn.Module]
    inputs: Callable[[], tuple[torch.Tensor, ...]]


CASES = {
    "text-learned": Case(
        lambda: TextEncoder(vocab_size=50, out_dim=OUT_DIM, width=16, depth=1, num_heads=2, max_length=16),
        _text_inputs,
    ),
    "text-sinusoidal": Case(
        lambda: TextEncoder(
            vocab_size=50, out_dim=OUT_DIM, width=16, depth=1, num_heads=2, max_length=16, positions="sinusoidal"
        ),
        _text_inputs,
    ),
    "text-gru": Case(
        lambda: RecurrentTextEncoder(vocab_size=50, out_dim=OUT_DIM, width=16, depth=2, max_length=16),
        _text_inputs,
    ),
    "cnn": Case(
        lambda: CNNImageEncoder(out_dim=OUT_DIM, image_size=IMAGE, channels=(8, 16), blocks_per_stage=2, groups=4),
        _image_inputs,
    ),
    "cnn-sinusoidal2d-coordinates": Case(
        lambda: CNNImageEncoder(out_dim=OUT_DIM, image_size=IMAGE, channels=(8, 16), groups=4,
                                positions="sinusoidal2d", coordinates=True),
        _image_inputs,
    ),
    "tubelet-vit": Case(
        lambda: TubeletViT(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, patch_size=8, tubelet=2, width=16,
                           depth=1, num_heads=2),
        _video_inputs,
    ),
    "conv3d": Case(
        lambda: Conv3DEncoder(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, channels=(8, 16), groups=4),
        _video_inputs,
    ),
    "frames": Case(
        lambda: FrameEncoder(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, num_heads=2,
                             frame=_cnn_frames()),
        _video_inputs,
    ),
    "frames-readout": Case(
        lambda: FrameEncoder(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, num_heads=2, frame_readout=4,
                             frame=_cnn_frames()),
        _video_inputs,
    ),
    "frames-motion-vit": Case(
        lambda: FrameEncoder(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, num_heads=2, motion=True,
                             frame=_vit_frames(in_channels=6)),
        _video_inputs,
    ),
    "frames-motion-cnn": Case(
        lambda: FrameEncoder(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, num_heads=2, motion=True,
                             frame_readout=4, frame=_cnn_frames(in_channels=6)),
        _video_inputs,
    ),
    "frames-tokens-with-audio": Case(
        lambda: FrameEncoder(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, num_heads=2, frame_tokens=True,
                             frame=_vit_frames(),
                             audio=ConvAudioEncoder(out_dim=OUT_DIM, channels=(16,), groups=4, **AUDIO)),
        _video_audio_inputs,
    ),
    "audio-spectrogram": Case(
        lambda: SpectrogramTransformer(out_dim=OUT_DIM, patch_freq=8, patch_time=8, width=16, depth=1, num_heads=2,
                                       **AUDIO),
        _audio_inputs,
    ),
    "audio-conv": Case(
        lambda: ConvAudioEncoder(out_dim=OUT_DIM, channels=(16, 16), groups=4, depth=1, num_heads=2, **AUDIO),
        _audio_inputs,
    ),
    "audio-speech-conformer": Case(
        lambda: SpeechEncoder(out_dim=OUT_DIM, subsampling=4, conv_channels=4, depth=1, num_heads=2, conv_kernel=3, dropout=0.0,
                              freq_masks=0, time_masks=0, **AUDIO),  # random masks differ with the batch
        _audio_inputs,
    ),
    "audio-speech-transformer": Case(
        lambda: SpeechEncoder(out_dim=OUT_DIM, subsampling=2, conv_channels=4, block="transformer", depth=1,
                              num_heads=2, dropout=0.0, freq_masks=0, time_masks=0, **AUDIO),
        _audio_inputs,
    ),
    "vit": Case(
        lambda: ViTImageEncoder(out_dim=OUT_DIM, image_size=IMAGE, patch_size=4, width=16, depth=1, num_heads=2),
        _image_inputs,
    ),
    "tokenizer": Case(  # an image tokenizer's encoder: FSQ codes on a 4 × 4 grid
        lambda: QuantizedImageEncoder(out_dim=OUT_DIM, image_size=IMAGE, downsample=4, channels=[8, 8, 16]),
        _image_inputs,
    ),
    "video-tokenizer": Case(  # a video tokenizer's encoder: each of 4 frames' FSQ codes on a 4 × 4 grid
        lambda: QuantizedVideoEncoder(out_dim=OUT_DIM, image_size=IMAGE, num_frames=FRAMES, downsample=4,
                                      channels=[8, 8, 16]),
        _video_inputs,
    ),
    "audio-tokenizer": Case(  # a sound tokenizer's encoder: 64 log-mel frames → 16 FSQ codes
        lambda: QuantizedAudioEncoder(out_dim=OUT_DIM, sample_rate=RATE, duration=0.504, n_fft=256, hop_length=64,
                                      n_mels=16, channels=[8, 8, 16], vocoder_iterations=2),
        lambda: (torch.randn(B, 4032) * 0.1,),
    ),
    # pretrained models from local folders (tiny random ones here), projected to OUT_DIM
    "hf-bert": Case(lambda: HFTextEncoder(path=str(hf_folders.bert()), out_dim=OUT_DIM), _text_inputs),
    "hf-clip-text": Case(lambda: HFTextEncoder(path=str(hf_folders.clip()), out_dim=OUT_DIM, pooling="pooler"),
                         _text_inputs),
    "hf-vit": Case(lambda: HFImageEncoder(path=str(hf_folders.vit()), out_dim=OUT_DIM), _image_inputs),
    "hf-resnet": Case(lambda: HFImageEncoder(path=str(hf_folders.resnet()), out_dim=OUT_DIM), _image_inputs),
    "hf-clip-vision": Case(lambda: HFImageEncoder(path=str(hf_folders.clip()), out_dim=OUT_DIM), _image_inputs),
    "hf-wav2vec2": Case(lambda: HFAudioEncoder(path=str(hf_folders.wav2vec2()), out_dim=OUT_DIM), _audio_inputs),
    "hf-whisper": Case(lambda: HFAudioEncoder(path=str(hf_folders.whisper()), out_dim=OUT_DIM),
                       lambda: (torch.randn(B, 16, 50),)),
}


def _run(name: str, seed: int = 0) -> tuple[nn.Module, tuple[torch.Tensor, ...], EncoderOutput]:
    torch.manual_seed(seed)
    encoder = CASES[name].build()
    inputs = CASES[name].inputs()
    return encoder, inputs, encoder(*inputs)


@pytest.mark.parametrize("name", CASES)
def test_output_shapes_and_values(name):
    encoder, _, out = _run(name)
    assert isinstance(out, EncoderOutput)
    n = out.tokens.shape[1]
    assert out.tokens.shape == (B, n, OUT_DIM)
    assert out.mask.shape == (B, n) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (B, OUT_DIM)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    if hasattr(encoder, "num_tokens"):
        assert n == encoder.num_tokens and out.mask.all()


@pytest.mark.parametrize("name", CASES)
def test_every_trainable_parameter_gets_a_gradient(name):
    encoder, _, out = _run(name)
    real = out.mask.unsqueeze(-1).to(out.tokens.dtype)  # (B, N, 1)
    loss = (out.tokens * real).pow(2).mean() + out.pooled.pow(2).mean()
    loss.backward()
    for param_name, p in encoder.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, param_name
            assert torch.isfinite(p.grad).all(), param_name
    assert sum(p.grad.abs().sum() for p in encoder.parameters()) > 0


@pytest.mark.parametrize("name", CASES)
def test_a_training_forward_traces_into_one_graph(name):
    """`train.compile` gets the whole encoder in one graph (no data-dependent check, no Python fallback),
    pretrained Hugging Face encoders included."""
    torch.manual_seed(0)
    encoder = CASES[name].build().train()
    assert graph_breaks(encoder, *CASES[name].inputs()) == []


@pytest.mark.parametrize("name", CASES)
def test_deterministic_under_seed(name):
    _, _, a = _run(name, seed=0)
    _, _, b = _run(name, seed=0)
    _, _, c = _run(name, seed=1)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)
    assert not torch.allclose(a.pooled, c.pooled)


@pytest.mark.parametrize("name", CASES)
def test_examples_are_encoded_independently_of_the_batch(name):
    # No BatchNorm-style batch statistics, even in training mode: data-parallel = single process.
    encoder, inputs, _ = _run(name)
    encoder.train()
    full = encoder(*inputs)
    alone = encoder(*(t[:1] for t in inputs))
    torch.testing.assert_close(alone.tokens, full.tokens[:1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["text-learned", "text-sinusoidal"])
def test_text_pooled_is_cls_and_ignores_appended_padding(name):
    encoder, (ids, mask), out = _run(name)
    torch.testing.assert_close(out.pooled, out.tokens[:, 0])
    extra = 3
    longer_ids = torch.cat([ids, torch.randint(2, 50, (B, extra))], dim=1)  # junk ids under padding
    longer_mask = torch.cat([mask, torch.zeros(B, extra, dtype=torch.bool)], dim=1)
    longer = encoder(longer_ids, longer_mask)
    torch.testing.assert_close(longer.pooled, out.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(longer.tokens[:, : ids.shape[1]][mask], out.tokens[mask], atol=1e-5, rtol=0)
    assert torch.equal(longer.mask, longer_mask)


def test_gru_ignores_appended_padding_and_reads_word_order():
    encoder, (ids, mask), out = _run("text-gru")
    extra = 3
    longer = encoder(torch.cat([ids, torch.randint(2, 50, (B, extra))], dim=1),
                     torch.cat([mask, torch.zeros(B, extra, dtype=torch.bool)], dim=1))
    torch.testing.assert_close(longer.pooled, out.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(longer.tokens[:, : ids.shape[1]][mask], out.tokens[mask], atol=1e-5, rtol=0)
    assert (longer.tokens[:, ids.shape[1]:] == 0).all() and (out.tokens[~mask] == 0).all()
    # the same words in another order give another summary (a bag of words would not)
    swapped = ids.clone()
    swapped[0, 1], swapped[0, 2] = ids[0, 2], ids[0, 1]
    assert not torch.allclose(encoder(swapped, mask).pooled[0], out.pooled[0], atol=1e-4)
    with pytest.raises(ValueError, match="width must be even"):
        RecurrentTextEncoder(vocab_size=10, out_dim=4, width=5)


def test_image_pooling():
    _, _, cnn = _run("cnn")
    torch.testing.assert_close(cnn.pooled, cnn.tokens.mean(dim=1))
    _, _, vit = _run("vit")
    torch.testing.assert_close(vit.pooled, vit.tokens[:, 0])
    assert vit.tokens.shape[1] == 1 + (IMAGE // 4) ** 2


def test_too_long_or_wrong_sized_inputs_name_the_limit():
    text = CASES["text-learned"].build()
    with pytest.raises(ValueError, match="17.*max_length=16"):
        text(torch.ones(1, 17, dtype=torch.long), torch.ones(1, 17, dtype=torch.bool))
    for name in ("cnn", "vit"):
        with pytest.raises(ValueError, match=r"image_size=16.*\(1, 3, 20, 20\)"):
            CASES[name].build()(torch.randn(1, 3, 20, 20))
    with pytest.raises(ValueError, match="image_size=18.*patch_size=4"):
        ViTImageEncoder(out_dim=4, image_size=18, patch_size=4)
    with pytest.raises(ValueError, match="frame_tokens and frame_readout"):
        FrameEncoder(out_dim=4, frame=nn.Identity(), frame_tokens=True, frame_readout=4)
    with pytest.raises(ValueError, match="positions='rotary'"):
        TextEncoder(vocab_size=10, out_dim=4, positions="rotary")


TIMED = {"tubelet-vit", "conv3d", "frames", "frames-readout", "frames-motion-vit", "frames-motion-cnn", "frames-tokens-with-audio", "audio-spectrogram",
         "audio-conv", "audio-speech-conformer", "audio-speech-transformer"}


@pytest.mark.parametrize("name", CASES)
def test_timed_encoders_say_when_each_token_happens(name):
    _, _, out = _run(name)
    if name not in TIMED:
        assert out.times is None
        return
    assert out.times.shape == (out.tokens.shape[1],)
    timed = out.times[~torch.isnan(out.times)]
    assert ((timed > 0) & (timed < 1)).all()
    assert timed.min() <= 0.25 and timed.max() >= 0.75  # the tokens cover the whole clip


def test_frame_times_are_frame_centres_and_audio_tokens_follow():
    _, _, out = _run("frames-tokens-with-audio")
    encoder = CASES["frames-tokens-with-audio"].build()
    per_frame = encoder.frame.num_tokens
    frame_times = out.times[: FRAMES * per_frame].reshape(FRAMES, per_frame)
    torch.testing.assert_close(frame_times, ((torch.arange(FRAMES) + 0.5) / FRAMES)[:, None].expand(-1, per_frame))
    sound = out.times[FRAMES * per_frame:]
    assert len(sound) == encoder.audio.num_tokens and (sound.diff() > 0).all()


def test_motion_gives_each_frame_its_change_from_the_frame_before():
    encoder = CASES["frames-motion-cnn"].build()
    seen = []
    encoder.frame.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    video = _video_inputs()[0]
    encoder(video)
    frames = seen[0].reshape(B, FRAMES, 6, IMAGE, IMAGE)
    torch.testing.assert_close(frames[:, :, :3], video)
    torch.testing.assert_close(frames[:, 1:, 3:], video[:, 1:] - video[:, :-1])
    assert (frames[:, 0, 3:] == 0).all()


def test_every_registered_encoder_is_under_contract():
    # the registry is the source of truth: a new encoder fails here until it has a case above
    from polymodal.modalities.registry import MODALITIES

    covered = {type(case.build()) for case in CASES.values()}
    for modality in MODALITIES.values():
        for type_name, cls in modality.encoders.items():
            assert cls in covered, f"model.encoders.{modality.name}.type {type_name!r} ({cls.__name__}) has no case"


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_encoder_that_masks_tokens_keeps_the_masking_protocol(name):
    """A `MasksTokens` encoder (what masked modelling can train) can mask once asked to; its patch
    tokens stand at `patch_start` onwards, one per patch, and `patch_targets` gives `patch_dim` values each;
    a masked patch's token changes, an unmasked example's output does not."""
    encoder = CASES[name].build().eval()
    if not isinstance(encoder, MasksTokens):  # then it claims no half of the protocol either
        assert not hasattr(encoder, "patch_targets") and not hasattr(encoder, "enable_token_masking")
        return
    encoder.enable_token_masking()
    inputs = CASES[name].inputs()
    targets = encoder.patch_targets(inputs[0])
    assert targets.shape == (B, encoder.num_patches, encoder.patch_dim)
    token_mask = torch.zeros(B, encoder.num_patches, dtype=torch.bool)
    token_mask[0, 0] = True
    plain, masked = encoder(*inputs), encoder(*inputs, token_mask=token_mask)
    assert plain.tokens.shape[1] - encoder.patch_start >= encoder.num_patches
    assert not torch.allclose(plain.tokens[0], masked.tokens[0])
    torch.testing.assert_close(plain.tokens[1], masked.tokens[1])


def test_every_registered_encoder_declares_its_capabilities_by_protocol():
    """The registry's classes that hold other encoders or mask tokens say so by the protocols the builder asks."""
    from polymodal.modalities.registry import MODALITIES

    holders = {(m, k) for m, spec in MODALITIES.items() for k, cls in spec.encoders.items()
               if issubclass(cls, HoldsEncoders)}
    assert holders == {("video", "frames")}
    for key, (modality, _) in FrameEncoder.nested_encoders().items():
        assert key in FrameEncoder.__init__.__code__.co_varnames and modality in MODALITIES
    masking = {(m, k) for m, spec in MODALITIES.items() for k, cls in spec.encoders.items()
               if issubclass(cls, MasksTokens)}
    assert masking == {("image", "cnn"), ("image", "vit"), ("video", "tubelet_vit"), ("audio", "spectrogram")}
