"""The nearest-neighbour caption baseline copies the caption of the most similar training example."""

import torch

from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.manifest import read_manifest
from polymodal.evaluation.baselines import nearest_neighbour_predictions

CONFIG = {"model": {"fusion": {"type": "late"}, "width": 16,
                    "encoders": {"image": {"type": "cnn", "image_size": 32, "channels": [8, 16]}},
                    "decoder": {"type": "transformer", "width": 16, "depth": 1, "num_heads": 2}},
          "tasks": {"caption": {"type": "caption"}}, "data": {}, "train": {}}


def test_a_training_image_gets_its_own_caption_and_another_the_nearest(shapes_data):
    train = read_manifest(shapes_data / "train.jsonl")
    system = build_system(from_dict(CONFIG, shapes_data), train)
    own = nearest_neighbour_predictions(system, "caption", train, train[:20])
    assert own == [r["text"] for r in train[:20]]  # distance 0 to itself
    # a test image is not in the gallery: the caption of the training image of highest cosine similarity
    # of its preprocessed, centred pixels, found here by hand
    test = read_manifest(shapes_data / "test.jsonl")[:10]
    nearest = nearest_neighbour_predictions(system, "caption", train, test)
    processor = system.processors["image"]

    def pixels(records):
        x = torch.stack([processor.prepare(r["image"], None) for r in records]).flatten(1).double()
        x = x - x.mean(1, keepdim=True)
        return x / x.norm(dim=1, keepdim=True)

    expected = (pixels(test) @ pixels(train).T).argmax(1).tolist()
    assert nearest == [train[i]["text"] for i in expected]
    gallery = train[:1] + train[5:6]  # two captions to choose from: each query takes the closer image's
    picked = nearest_neighbour_predictions(system, "caption", gallery, [train[0], train[5]])
    assert picked == [train[0]["text"], train[5]["text"]]
