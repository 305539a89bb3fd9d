import math

import torch

from curation.train.losses.ibot import ibot_loss, mask_weights


def test_mask_weights_per_image():
    masks = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])
    assert mask_weights(masks).tolist() == [0.5, 0.5, 1.0]


def test_ibot_loss_hand_computed():
    # 3 images of 3 patches: image 0 has 2 masked patches, image 1 one, image 2 none.
    masks = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])
    student = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [0.0, math.log(3)]])
    teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    loss = ibot_loss(student, teacher, mask_weights(masks), num_images=3, student_temp=1.0)
    ce = [math.log(2), -math.log(1 / 4), -(0.5 * math.log(1 / 4) + 0.5 * math.log(3 / 4))]
    expected = (ce[0] / 2 + ce[1] / 2 + ce[2] / 1) / 3
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_temperature_scales_student_logits():
    student = torch.tensor([[1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    loss = ibot_loss(student, teacher, torch.ones(1), num_images=1, student_temp=0.5)
    # log_softmax([2, 0])[1] = -log(1 + e^2)
    assert math.isclose(loss.item(), math.log(1 + math.e**2), rel_tol=1e-6)
