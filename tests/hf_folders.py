"""Tiny random Hugging Face model folders, as `save_pretrained` writes them: stand-ins for a user's local
BERT, ViT, ResNet, CLIP, Wav2Vec2 and Whisper folders (no download in tests). Made once per process."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

from polymodal.modalities.text.tokenizer import TextTokenizer

WORDS = ("a red circle a blue square a green triangle to the left of right yellow purple and from "
         "is there what color shape the big small one two three").split()


def _save(model, folder: Path, *extras) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    for extra in extras:
        extra.save_pretrained(folder)
    return folder


def _wordpiece():
    import transformers

    ours = TextTokenizer.train([" ".join(WORDS)] * 3, vocab_size=120)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=ours.tokenizer, cls_token="[CLS]",
                                                sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                                                mask_token="[MASK]")


@functools.lru_cache(maxsize=None)
def root() -> Path:
    return Path(tempfile.mkdtemp(prefix="polymodal-hf-"))


@functools.lru_cache(maxsize=None)
def bert() -> Path:
    import transformers

    torch.manual_seed(0)
    tokenizer = _wordpiece()
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=24, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=48, max_position_embeddings=64,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return _save(transformers.BertModel(config), root() / "bert", tokenizer)


@functools.lru_cache(maxsize=None)
def vit() -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=24, num_hidden_layers=1,
                                    num_attention_heads=2, intermediate_size=48)
    processor = transformers.ViTImageProcessor(size={"height": 16, "width": 16})
    return _save(transformers.ViTModel(config), root() / "vit", processor)


@functools.lru_cache(maxsize=None)
def resnet() -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])
    processor = transformers.ViTImageProcessor(size={"height": 32, "width": 32})
    return _save(transformers.ResNetModel(config), root() / "resnet", processor)


@functools.lru_cache(maxsize=None)
def clip() -> Path:
    import transformers

    torch.manual_seed(0)
    tokenizer = _wordpiece()
    config = transformers.CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 24, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "intermediate_size": 48, "max_position_embeddings": 32,
                     "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0},
        vision_config={"image_size": 16, "patch_size": 8, "hidden_size": 24, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "intermediate_size": 48},
        projection_dim=16)
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return _save(transformers.CLIPModel(config), root() / "clip", tokenizer, processor)


@functools.lru_cache(maxsize=None)
def wav2vec2() -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.Wav2Vec2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=48, conv_dim=(16, 16), conv_stride=(5, 4),
                                         conv_kernel=(10, 4), num_feat_extract_layers=2,
                                         num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                                         hidden_dropout=0.0, activation_dropout=0.0, attention_dropout=0.0,
                                         layerdrop=0.0, mask_time_prob=0.0)
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000, do_normalize=True)
    return _save(transformers.Wav2Vec2Model(config), root() / "wav2vec2", extractor)


@functools.lru_cache(maxsize=None)
def whisper() -> Path:
    import transformers

    torch.manual_seed(0)
    # 0.5 s of 8 kHz audio, hop 80: 50 frames; the encoder halves them to its 25 positions
    extractor = transformers.WhisperFeatureExtractor(feature_size=16, sampling_rate=8000, hop_length=80,
                                                     chunk_length=0.5, n_fft=200)
    config = transformers.WhisperConfig(vocab_size=64, num_mel_bins=16, d_model=24, encoder_layers=1,
                                        encoder_attention_heads=2, decoder_layers=1, decoder_attention_heads=2,
                                        encoder_ffn_dim=48, decoder_ffn_dim=48, max_source_positions=25,
                                        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                        decoder_start_token_id=1)
    return _save(transformers.WhisperModel(config), root() / "whisper", extractor)
