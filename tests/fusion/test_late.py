"""Late fusion's combinations against the formulas by hand, with and without a missing modality."""

import pytest
import torch

from polymodal.fusion.late import LateFusion

A = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
B = torch.tensor([[0.5, -2.0], [1.0, 4.0]])


def test_mean_and_product():
    pooled = {"text": B, "image": A}
    torch.testing.assert_close(LateFusion(["image", "text"], 2, "mean").combine_pooled(pooled), (A + B) / 2)
    torch.testing.assert_close(LateFusion(["image", "text"], 2, "product").combine_pooled(pooled), A * B)


def test_weighted_is_a_softmax_of_the_learnt_weights():
    fusion = LateFusion(["image", "text"], 2, "weighted")
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.0, 1.0]))  # sorted order: image, text
    w = torch.tensor([1.0, torch.e]) / (1 + torch.e)
    torch.testing.assert_close(fusion.combine_pooled({"image": A, "text": B}), w[0] * A + w[1] * B)
    torch.testing.assert_close(fusion.combine_pooled({"text": B}), B)  # one left: all its weight


def test_concat_is_a_linear_map_of_the_sorted_concatenation_with_zeros_for_a_missing_one():
    fusion = LateFusion(["text", "image"], 2, "concat")
    torch.testing.assert_close(fusion.combine_pooled({"text": B, "image": A}), fusion.proj(torch.cat([A, B], dim=-1)))
    torch.testing.assert_close(fusion.combine_pooled({"text": B}),
                               fusion.proj(torch.cat([torch.zeros_like(B), B], dim=-1)))


def test_mean_leaves_a_missing_modality_out():
    torch.testing.assert_close(LateFusion(["image", "text"], 2, "mean").combine_pooled({"image": A}), A)


def test_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="combine: expected one of concat, mean, weighted, product, scores, got 'max'"):
        LateFusion(["image"], 2, "max")
    with pytest.raises(ValueError, match="at least one of"):
        LateFusion(["image"], 2, "mean").combine_pooled({})


def test_score_level_fusion_averages_each_modalitys_head_scores_over_those_present():
    from polymodal.models.output import ModelOutput
    from polymodal.modalities.base import EncoderOutput
    from polymodal.tasks.base import head_scores

    fusion = LateFusion(["image", "text"], 2, "scores")
    image_present = torch.tensor([True, False])  # example 1 lacks its image (a placeholder stands in)
    outputs = {"image": EncoderOutput(A[:, None], torch.ones(2, 1, dtype=torch.bool), A, present=image_present),
               "text": EncoderOutput(B[:, None], torch.ones(2, 1, dtype=torch.bool), B)}
    fused = fusion(outputs)
    torch.testing.assert_close(fused.pooled, (A + B) / 2)
    head = torch.nn.Linear(2, 3)
    out = ModelOutput(modalities=outputs, pooled=fused.pooled, scored=fused.scored, score_weights=fused.score_weights)
    scores = head_scores(head, out)
    torch.testing.assert_close(scores[0], (head(A[0]) + head(B[0])) / 2)  # both vote
    torch.testing.assert_close(scores[1], head(B[1]))  # the absent image does not
    # without score-level fusion the head reads the fused vector
    assert torch.equal(head_scores(head, ModelOutput(modalities=outputs, pooled=fused.pooled)), head(fused.pooled))


def test_gated_sum_is_the_gmu_formula_and_gives_an_absent_modality_no_weight():
    from polymodal.fusion.gmu import GatedSumFusion
    from polymodal.modalities.base import EncoderOutput

    torch.manual_seed(0)
    fusion = GatedSumFusion(["image", "text"], 2)
    present = torch.tensor([True, False])
    outputs = {"image": EncoderOutput(A[:, None], torch.ones(2, 1, dtype=torch.bool), A, present=present),
               "text": EncoderOutput(B[:, None], torch.ones(2, 1, dtype=torch.bool), B)}
    got = fusion(outputs).pooled
    z = fusion.gate(torch.cat([A, B], dim=-1)).view(2, 2, 2)  # (B, modality, D)
    h_image, h_text = fusion.transform["image"](A).tanh(), fusion.transform["text"](B).tanh()
    w = z[0].softmax(dim=0)
    torch.testing.assert_close(got[0], w[0] * h_image[0] + w[1] * h_text[0])
    torch.testing.assert_close(got[1], h_text[1])  # the image is absent: the text gets all the weight
    torch.testing.assert_close(fusion({"text": outputs["text"]}).pooled, h_text)
