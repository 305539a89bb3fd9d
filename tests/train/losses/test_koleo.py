import math

import torch

from curation.train.losses.koleo import koleo_loss


def test_koleo_hand_computed():
    # Unit vectors at 0, 90 and 180 degrees: every nearest neighbour is sqrt(2) away.
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert math.isclose(koleo_loss(x).item(), -math.log(math.sqrt(2)), rel_tol=1e-5)


def test_koleo_normalises_and_picks_nearest():
    # Scaled copies: after L2 normalisation points 0 and 1 are 0.2 rad apart.
    a, b = 0.0, 0.2
    x = torch.tensor([[3 * math.cos(a), 3 * math.sin(a)], [0.5 * math.cos(b), 0.5 * math.sin(b)], [-2.0, 0.0]])
    chord = 2 * math.sin(0.1)  # |e^{ia} - e^{ib}|
    d2 = math.dist((-1.0, 0.0), (math.cos(b), math.sin(b)))
    expected = -(math.log(chord) * 2 + math.log(d2)) / 3
    assert math.isclose(koleo_loss(x).item(), expected, rel_tol=1e-5)


def test_koleo_duplicates_are_finite_and_large():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = koleo_loss(x)
    assert torch.isfinite(loss) and loss.item() > 5.0
