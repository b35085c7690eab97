import math

import pytest
import torch

from dpo.loss import clip_labels, dense_dpo_loss, per_frame_error


def rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def test_hand_worked_numbers():
    # One pair, two frames. Frame 0: a better (+1); policy improved a by 0.002 and b by 0.0 -> delta = 0.002.
    # inside = 0.5 * 500 * 1 * 0.002 = 0.5; loss = -log sigmoid(0.5) = 0.474077...
    # Frame 1: b better (-1); policy improved a by 0.004 relative to b -> delta = 0.004, inside = -1.0.
    pa = torch.tensor([[0.100, 0.100]], dtype=torch.float64)
    ra = torch.tensor([[0.102, 0.104]], dtype=torch.float64)
    pb = torch.tensor([[0.200, 0.300]], dtype=torch.float64)
    rb = torch.tensor([[0.200, 0.300]], dtype=torch.float64)
    out = dense_dpo_loss(pa, pb, ra, rb, torch.tensor([[1, -1]]), beta=500.0)
    expected = (-math.log(1 / (1 + math.exp(-0.5))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-9)
    assert out.implicit_accuracy.item() == 0.5 and out.num_decided.item() == 2
    assert out.margin.item() == pytest.approx((0.002 - 0.004) / 2)
    eq7 = dense_dpo_loss(pa, pb, ra, rb, torch.tensor([[1, -1]]), beta=500.0, form="eq7")
    assert eq7.loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(0.5))), rel=1e-9)  # sigma(0.5 - 1.0)


def test_matches_slow_loop_over_segments():
    B, T, beta = 3, 7, 500.0
    pa, pb, ra, rb = (rand(B, T, seed=s) * 0.01 for s in range(4))
    labels = torch.tensor([[1, 1, 0, -1, -1, 0, 1], [0, 0, 0, 0, 0, 0, 0], [-1, 1, -1, 1, 0, 0, 1]])
    terms = []
    for i in range(B):
        for t in range(T):
            lab = int(labels[i, t])
            if lab:
                inside = -0.5 * beta * lab * ((pa[i, t] - ra[i, t]) - (pb[i, t] - rb[i, t]))
                terms.append(-math.log(1 / (1 + math.exp(-float(inside)))))
    out = dense_dpo_loss(pa, pb, ra, rb, labels, beta=beta)
    assert out.loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-9)


def test_one_label_for_all_frames_equals_vanilla_flow_dpo():
    """All frames sharing one label with equal per-frame errors = vanilla Flow-DPO on clip-averaged errors."""
    pa, pb, ra, rb = (rand(4, 1, seed=s).expand(4, 5) * 0.01 for s in range(4))
    lab = torch.tensor([[1], [-1], [1], [-1]])
    dense = dense_dpo_loss(pa, pb, ra, rb, lab.expand(4, 5))
    vanilla = dense_dpo_loss(pa[:, :1], pb[:, :1], ra[:, :1], rb[:, :1], lab)
    assert dense.loss.item() == pytest.approx(vanilla.loss.item(), rel=1e-12)
    # and Eq. 7 with T = 1 is the same vanilla loss
    assert dense_dpo_loss(pa[:, :1], pb[:, :1], ra[:, :1], rb[:, :1], lab, form="eq7").loss.item() == pytest.approx(
        vanilla.loss.item(), rel=1e-12
    )


def test_ties_give_zero_loss_and_zero_gradient():
    pa = rand(2, 4, seed=1).requires_grad_()
    pb = rand(2, 4, seed=2).requires_grad_()
    ra, rb = rand(2, 4, seed=3), rand(2, 4, seed=4)
    labels = torch.tensor([[1, 0, 0, -1], [0, 0, 0, 0]])
    out = dense_dpo_loss(pa, pb, ra, rb, labels)
    out.loss.backward()
    assert torch.all(pa.grad[labels == 0] == 0) and torch.all(pb.grad[labels == 0] == 0)
    assert torch.all(pa.grad[labels != 0] != 0)
    pa.grad = None
    all_tie = dense_dpo_loss(pa, pb, ra, rb, torch.zeros(2, 4, dtype=torch.long))
    assert all_tie.loss.item() == 0.0 and all_tie.num_decided.item() == 0
    all_tie.loss.backward()
    assert torch.all(pa.grad == 0)


@pytest.mark.parametrize("form", ["dense", "eq7"])
def test_swapping_a_and_b_with_flipped_labels_changes_nothing(form):
    pa, pb, ra, rb = (rand(3, 6, seed=s) * 0.01 for s in range(4))
    labels = torch.randint(-1, 2, (3, 6), generator=torch.Generator().manual_seed(0))
    x = dense_dpo_loss(pa, pb, ra, rb, labels, form=form)
    y = dense_dpo_loss(pb, pa, rb, ra, -labels, form=form)
    assert x.loss.item() == pytest.approx(y.loss.item(), rel=1e-12)
    assert x.implicit_accuracy.item() == y.implicit_accuracy.item()


def test_gradient_pushes_the_preferred_error_down():
    pa = torch.full((1, 1), 0.1, requires_grad=True)
    pb = torch.full((1, 1), 0.1, requires_grad=True)
    out = dense_dpo_loss(pa, pb, torch.full((1, 1), 0.1), torch.full((1, 1), 0.1), torch.tensor([[1]]))
    out.loss.backward()
    assert pa.grad.item() > 0 and pb.grad.item() < 0  # descending lowers e_a and raises e_b
    assert out.loss.item() == pytest.approx(math.log(2))


def test_large_beta_is_stable():
    out = dense_dpo_loss(
        torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, 1), torch.tensor([[-1]]), beta=1e6
    )
    assert torch.isfinite(out.loss) and out.loss.item() > 1e5


def test_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        dense_dpo_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 3))


def test_helpers():
    target, pred = torch.zeros(2, 3, 4, 5, 6), torch.ones(2, 3, 4, 5, 6)
    pred[:, :, 1] = 3
    err = per_frame_error(target, pred)
    assert err.shape == (2, 4) and err[0, 0] == 1 and err[0, 1] == 9
    assert clip_labels(torch.tensor([[1, 1, -1], [0, 0, 0], [-1, 0, 1]])).tolist() == [[1], [0], [0]]


def test_weighted_loss_by_hand():
    """Frames weighted by the judge's confidence (0.9, 0.6, and a tie whose weight must not matter): the loss is
    (0.9·l0 + 0.6·l1) / 1.5 with l0, l1 the frames' −log σ; all-ones weights give the unweighted loss."""
    pa = torch.tensor([[0.100, 0.100, 0.1]], dtype=torch.float64)
    ra = torch.tensor([[0.102, 0.104, 0.3]], dtype=torch.float64)
    pb = torch.tensor([[0.200, 0.300, 0.2]], dtype=torch.float64)
    rb = torch.tensor([[0.200, 0.300, 0.2]], dtype=torch.float64)
    labels = torch.tensor([[1, -1, 0]])
    l0, l1 = -math.log(1 / (1 + math.exp(-0.5))), -math.log(1 / (1 + math.exp(1.0)))
    w = torch.tensor([[0.9, 0.6, 7.0]], dtype=torch.float64)
    out = dense_dpo_loss(pa, pb, ra, rb, labels, beta=500.0, weights=w)
    assert out.loss.item() == pytest.approx((0.9 * l0 + 0.6 * l1) / 1.5, rel=1e-9)
    assert out.implicit_accuracy.item() == 0.5  # diagnostics stay unweighted
    ones = dense_dpo_loss(pa, pb, ra, rb, labels, beta=500.0, weights=torch.ones_like(w))
    assert ones.loss.item() == pytest.approx(dense_dpo_loss(pa, pb, ra, rb, labels, beta=500.0).loss.item())
    with pytest.raises(ValueError, match="weights go with form dense"):
        dense_dpo_loss(pa, pb, ra, rb, labels, form="eq7", weights=w)
