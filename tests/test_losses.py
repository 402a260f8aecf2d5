"""InfoNCE and its cached (GradCache) computation on random tensors and a small dropout network."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from llm2vec_search.train.losses import InfoNCE, cached_contrastive_backward


def reference_infonce(q, d, neg, scale, exclude=None):
    """Written out long-hand: -log softmax of the positive among the candidates not excluded."""
    cands = torch.cat([d, neg]) if neg is not None else d
    q, cands = F.normalize(q, dim=-1), F.normalize(cands, dim=-1)
    losses = []
    for i in range(len(q)):
        kept = [c for j, c in enumerate(cands) if j == i or exclude is None or not exclude[i, j]]
        logits = scale * torch.stack([q[i] @ c for c in kept])
        losses.append(-(scale * (q[i] @ cands[i]) - torch.logsumexp(logits, 0)))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("with_negatives", [False, True])
def test_infonce_matches_reference(with_negatives):
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    neg = torch.randn(6, 8, generator=g) if with_negatives else None
    assert torch.allclose(InfoNCE(20.0)(q, d, neg), reference_infonce(q, d, neg, 20.0), atol=1e-5)


@pytest.mark.parametrize("with_negatives", [False, True])
def test_infonce_leaves_excluded_candidates_out(with_negatives):
    g = torch.Generator().manual_seed(1)
    q, d = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    neg = torch.randn(6, 8, generator=g) if with_negatives else None
    exclude = torch.rand(6, 12 if with_negatives else 6, generator=g) < 0.4
    exclude[0, 0] = True  # an anchor's own positive stays whatever the mask says
    masked = InfoNCE(20.0)(q, d, neg, exclude=exclude)
    assert torch.allclose(masked, reference_infonce(q, d, neg, 20.0, exclude), atol=1e-5)
    assert not torch.allclose(masked, InfoNCE(20.0)(q, d, neg), atol=1e-3)


def test_infonce_prefers_aligned_pairs():
    q = torch.eye(4)
    assert InfoNCE(20.0)(q, q) < 1e-3 < InfoNCE(20.0)(q, q.roll(1, 0))


class DropoutNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x):
        return self.lin(self.drop(x))


@pytest.mark.parametrize("mini_batch,masked", [(1, False), (3, False), (16, False), (3, True)])
def test_cached_loss_equals_plain_loss_and_gradients(mini_batch, masked):
    torch.manual_seed(0)
    net = DropoutNet().train()
    data = [torch.randn(8) for _ in range(10)]

    def embed(items):
        return net(torch.stack(list(items)))

    views = [data, data[::-1], [x * 2 for x in data]]
    exclude = torch.rand(10, 20, generator=torch.Generator().manual_seed(2)) < 0.3 if masked else None
    loss_fn = partial(InfoNCE(20.0), exclude=exclude)

    torch.manual_seed(123)
    net.zero_grad()
    plain = loss_fn(*[embed(v) for v in views])
    plain.backward()
    plain_grads = [p.grad.clone() for p in net.parameters()]

    if mini_batch < len(data):
        # With several chunks, dropout draws come in a different order than one big forward;
        # compare against the plain loss computed chunk by chunk in the same RNG order.
        torch.manual_seed(123)
        net.zero_grad()
        chunked = loss_fn(*[torch.cat([embed(v[i:i + mini_batch]) for i in range(0, len(v), mini_batch)])
                            for v in views])
        chunked.backward()
        plain, plain_grads = chunked, [p.grad.clone() for p in net.parameters()]

    torch.manual_seed(123)
    net.zero_grad()
    cached = cached_contrastive_backward(embed, views, loss_fn, mini_batch)
    assert abs(cached - plain.item()) < 1e-6
    for a, b in zip(plain_grads, [p.grad for p in net.parameters()]):
        assert torch.allclose(a, b, atol=1e-6)
