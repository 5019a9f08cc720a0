"""DenseFormer DWA: identity at init, the weighted average of the kept stream states, dilation/period."""

import numpy as np
import torch

import normlight
from normlight.models.transformer import run_blocks

G = torch.Generator().manual_seed(0)


def test_dwa_is_a_weighted_average_of_embeddings_and_block_outputs():
    hist = [torch.randn(2, 3, 8, generator=G, dtype=torch.float64) for _ in range(4)]  # x0, block 1..3 outputs
    dwa = normlight.create_residual("dwa", 8, site="depth", layer_idx=2, num_layers=4).double()
    assert dwa.sources == [0, 1, 2, 3]
    assert torch.equal(dwa(hist), hist[-1])  # init: alpha = 1 on the current block output, 0 elsewhere
    w = torch.tensor([0.3, -0.2, 0.5, 0.9], dtype=torch.float64)
    with torch.no_grad():
        dwa.weight.copy_(w)
    want = sum(wi * h.numpy() for wi, h in zip(w.numpy(), hist))
    np.testing.assert_allclose(dwa(hist).detach().numpy(), want, rtol=1e-12)
    assert dwa.diagnostics() == {"w00": 0.3, "w01": -0.2, "w02": 0.5, "w03": 0.9}


def test_dilation_and_period_keep_the_papers_sources():
    mk = lambda i, **kw: normlight.create_residual("dwa", 8, site="depth", layer_idx=i, num_layers=6, **kw)
    assert mk(4, dilation=2).sources == [1, 3, 5]  # block 5's output and every other earlier state
    assert mk(3, dilation=2).sources == [0, 2, 4]
    assert mk(0, period=2).weight is None and mk(1, period=2).sources == [0, 1, 2]


def test_model_with_dwa_equals_the_plain_model_at_init_and_reads_earlier_states_after():
    torch.manual_seed(0)
    plain = normlight.create_model("gpt-nano", depth=3).eval()
    torch.manual_seed(0)
    dense = normlight.create_model("gpt-nano", depth=3, residual="dwa").eval()
    idx = torch.randint(0, 256, (2, 8), generator=G)
    torch.testing.assert_close(dense(idx), plain(idx), rtol=0, atol=1e-6)
    with torch.no_grad():
        dense.blocks[2].depth_residual.weight[0] = 0.5  # the last block's DWA now also reads the embeddings
    x0 = dense.drop(dense.tok_emb(idx) + dense.pos_emb(torch.arange(8)))
    out, _ = run_blocks(dense, x0)
    h = x0
    for blk in dense.blocks[:2]:
        h = blk(h)
    torch.testing.assert_close(out, 0.5 * x0 + dense.blocks[2](h), rtol=1e-5, atol=1e-6)
