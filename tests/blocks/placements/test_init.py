"""Init values and hooks: DeepNorm, Sub-LN, ReZero, SkipInit, nGPT (numbers from reference norms.md)."""

import math

import pytest
import torch

import normlight
from normlight.blocks.placements.deep import deepnorm_alpha, deepnorm_beta, subln_gamma
from normlight.blocks.placements.ngpt import NGPTMLP, ScaledParam
from normlight.models.transformer import num_params

LN = torch.nn.LayerNorm


def gpt(placement, **kw):
    return normlight.create_model("gpt-nano", placement=placement, **{"norm": LN, **kw})


def test_deepnorm_constants_and_init():
    assert round(deepnorm_alpha(12), 4) == 2.2134 and round(deepnorm_beta(12), 4) == 0.3195
    model = gpt("deepnorm", depth=12, dim=128, num_heads=4)
    assert model.blocks[0].alpha == pytest.approx(2.2134, abs=1e-4)
    assert isinstance(model.norm, torch.nn.Identity)  # Post-LN family: no final norm
    q, k, v = model.blocks[3].attn.qkv.weight.chunk(3)
    xavier = math.sqrt(2 / (128 + 128))
    assert q.std().item() == pytest.approx(xavier, rel=0.05) and k.std().item() == pytest.approx(xavier, rel=0.05)
    assert v.std().item() == pytest.approx(0.3195 * xavier, rel=0.05)
    # the hook alone gives the paper's init, biases 0 included, whatever the model's own init left there
    lins = [m for b in model.blocks for m in (b.attn.qkv, b.attn.out_proj, b.mlp.fc1, b.mlp.fc2)]
    with torch.no_grad():
        for lin in lins:
            lin.bias.fill_(1.0)
    model.placement_cls.init_weights(model)
    assert all(torch.count_nonzero(lin.bias) == 0 for lin in lins)
    fc1 = model.blocks[3].mlp.fc1.weight  # (512, 128)
    assert fc1.std().item() == pytest.approx(0.3195 * math.sqrt(2 / (128 + 512)), rel=0.05)


def test_subln_init_and_extra_norm_sizes():
    assert round(subln_gamma(12), 4) == 1.7827
    model = gpt("subln", depth=12, dim=128, num_heads=4)
    blk = model.blocks[5]
    q, k, v = blk.attn.qkv.weight.chunk(3)
    assert (v.std() / q.std()).item() == pytest.approx(1.7827, rel=0.04)
    assert (k.std() / q.std()).item() == pytest.approx(1.0, rel=0.04)
    # absolute scales, from torchscale's init: xavier_uniform std = gain * sqrt(2 / (fan_in + fan_out)); nn.Linear's
    # default (kaiming_uniform, a=sqrt(5)) is U(+-1/sqrt(fan_in)), std 1/sqrt(3 fan_in); then x gamma on v/out/fc
    gamma = 1.7827
    assert q.std().item() == pytest.approx(math.sqrt(2 / 256) / math.sqrt(2), rel=0.05)
    assert blk.attn.out_proj.weight.std().item() == pytest.approx(gamma * math.sqrt(2 / 256), rel=0.05)
    assert blk.mlp.fc1.weight.std().item() == pytest.approx(gamma / math.sqrt(3 * 128), rel=0.05)
    assert blk.mlp.fc2.weight.std().item() == pytest.approx(gamma / math.sqrt(3 * 512), rel=0.05)
    # the hook alone zeroes the attention biases, whatever the model's own init left there
    with torch.no_grad():
        blk.attn.qkv.bias.fill_(1.0)
        blk.attn.out_proj.bias.fill_(1.0)
    model.placement_cls.init_weights(model)
    assert torch.count_nonzero(blk.attn.qkv.bias) == 0 and torch.count_nonzero(blk.attn.out_proj.bias) == 0
    # the FFN's extra LN has the MLP width (ffn_dim), the attention's one the model width
    assert blk.mlp.mid_norm.normalized_shape == (512,) and blk.attn.inner_norm.normalized_shape == (128,)


def test_rezero_and_skipinit_are_identity_at_init_with_live_gates():
    x = torch.randn(2, 5, 64)
    n_none = num_params(gpt("none", norm="identity", depth=3))
    for name, extra in (("rezero", 1), ("skipinit", 2)):
        model = gpt(name, depth=3)
        assert num_params(model) == n_none + extra * 3  # one scalar per layer vs one per branch
        assert isinstance(model.norm, torch.nn.Identity)
        for blk in model.blocks:
            assert torch.equal(blk(x), x)
        model(torch.randint(0, 256, (2, 8))).logsumexp(-1).sum().backward()
        gates = [p for n, p in model.named_parameters() if n.endswith(("resweight", "attn_gain", "mlp_gain"))]
        assert len(gates) == extra * 3 and all(g.item() == 0 and g.grad.abs() > 0 for g in gates[-extra:])


def test_ngpt_effective_scales_and_unit_sphere_after_step():
    model = gpt("ngpt", pos="rope", depth=2)
    blk = model.blocks[0]
    assert blk.attn_alpha.p[0].item() == pytest.approx(1 / 32)  # stored at base scale 1/sqrt(1024)
    assert torch.equal(blk.attn_alpha.effective(), torch.full((64,), 0.05))
    assert torch.equal(blk.mlp_alpha.effective(), torch.full((64,), 0.05))
    assert torch.allclose(blk.attn.sqk.effective(), torch.ones(4, 1, 16))
    assert torch.allclose(blk.mlp.suv.effective(), torch.ones(512))
    assert torch.allclose(model.logit_scale.effective(), torch.ones(256))
    assert blk.attn.scale == pytest.approx(4.0)  # sqrt(head_dim), not 1/sqrt
    assert model.head.weight is not model.tok_emb.weight and isinstance(model.norm, torch.nn.Identity)
    assert model.placement_cls.recommended_defaults == {"weight_decay": 0.0, "warmup_steps": 0}
    with pytest.raises(normlight.PluginOptionError, match="tie_weights"):
        gpt("ngpt", tie_weights=True)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    idx = torch.randint(0, 256, (2, 16))
    torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    opt.step()
    q_rows = blk.attn.qkv.weight.norm(dim=1)
    assert not torch.allclose(q_rows, torch.ones_like(q_rows), atol=1e-4)  # the step left the sphere
    model.placement_cls.after_optimizer_step(model)
    for w, dim in (
        (model.tok_emb.weight, 1),
        (model.head.weight, 1),
        (blk.attn.qkv.weight, 1),
        (blk.mlp.fc1.weight, 1),
        (blk.attn.out_proj.weight, 0),
        (blk.mlp.fc2.weight, 0),
    ):
        assert torch.allclose(w.norm(dim=dim), torch.ones(w.shape[1 - dim]), atol=1e-6)
    h = model.tok_emb(idx)
    for b in model.blocks:
        h = b(h)
        assert torch.allclose(h.norm(dim=-1), torch.ones(2, 16), atol=1e-5)


def test_ngpt_block_matches_numpy_formula():
    import numpy as np

    torch.manual_seed(0)
    blk = normlight.get_placement("ngpt")(8, 2, causal=True)
    with torch.no_grad():
        blk.attn_alpha.p.uniform_(-0.05, 0.05)  # signed: the block must use |alpha|
    x, pos = torch.randn(1, 3, 8), torch.randn(1, 3, 8)  # pos (LaPE) goes to the attention
    a = blk.attn(x, pos).detach().double().numpy()
    jn = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)
    alpha_a = np.abs(blk.attn_alpha.p.detach().double().numpy() * (0.05 / (1 / 32)))
    hA = jn(x.double().numpy())
    h = jn(hA + alpha_a * (jn(a) - hA))
    m = blk.mlp(torch.from_numpy(h).float()).detach().double().numpy()
    hA = jn(h)
    expect = jn(hA + 0.05 * (jn(m) - hA))
    assert np.allclose(blk(x, pos).detach().numpy(), expect, atol=1e-5)


def test_lns_uses_plain_init_while_pre_scales_residual_writers():
    pre, lns = gpt("pre", depth=8), gpt("lns", depth=8)
    assert pre.blocks[2].mlp.fc2.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)  # 0.02/sqrt(2L)
    assert lns.blocks[2].mlp.fc2.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert lns.blocks[2].attn.out_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_ngpt_scalars_are_stored_as_in_the_reference_and_base_scale_is_an_option():
    model = gpt("ngpt", depth=1)
    blk = model.blocks[0]
    assert model.spec["pos"] == "rope" and model.pos_emb is None  # nGPT's default: RoPE
    assert torch.equal(blk.mlp.suv.p, torch.ones(512))  # suv_init_scaling = 1.0: Adam moves it at the reference rate
    for scaled in (blk.attn_alpha, blk.mlp_alpha, blk.attn.sqk, model.logit_scale):
        assert torch.allclose(scaled.p, torch.full_like(scaled.p, 1 / 32))  # base_scale 1/sqrt(1024)
    paper = gpt("ngpt", depth=1, placement_kwargs={"base_scale": 64**-0.5})  # the paper's 1/sqrt(d_model)
    pblk = paper.blocks[0]
    for scaled in (pblk.attn_alpha, pblk.mlp_alpha, pblk.attn.sqk, paper.logit_scale):
        assert torch.allclose(scaled.p, torch.full_like(scaled.p, 1 / 8))
    assert torch.allclose(paper.blocks[0].attn_alpha.effective(), torch.full((64,), 0.05))
    assert torch.allclose(paper.logit_scale.effective(), torch.ones(256))
    with pytest.raises(normlight.PluginOptionError, match="works with pos 'rope' only"):
        gpt("ngpt", pos="learned")


def test_ngpt_projections_are_bias_free_and_options_reach_the_sublayers():
    blk = normlight.get_placement("ngpt")(16, 2, dropout=0.25, bias=True)
    assert all(lin.bias is None for lin in (blk.attn.qkv, blk.attn.out_proj, blk.mlp.fc1, blk.mlp.fc2))
    assert blk.mlp.dropout.p == 0.25 and blk.attn.attn_dropout == 0.25
    assert NGPTMLP(4, 8).dropout.p == 0.0


def test_ngpt_scales_must_be_positive():
    with pytest.raises(ValueError, match="ngpt placement: base_scale must be > 0, got 0"):
        normlight.get_placement("ngpt")(16, 2, base_scale=0)
    with pytest.raises(ValueError, match="ngpt: a parameter scaling must be > 0, got 0.0"):
        ScaledParam(3, 1.0, 0.0)


def test_ngpt_mlp_matches_numpy_formula():
    """uv = s_uv * sqrt(d) * (W_fc x); u, v = halves; W_proj (u * silu(v)) (reference norms.md sec 6)."""
    import numpy as np

    torch.manual_seed(0)
    mlp = NGPTMLP(8, 12)
    with torch.no_grad():
        mlp.suv.p.uniform_(0.5, 1.5)
    x = torch.randn(3, 8)
    W1, W2 = mlp.fc1.weight.detach().double().numpy(), mlp.fc2.weight.detach().double().numpy()
    uv = mlp.suv.p.detach().double().numpy() * math.sqrt(8) * (x.double().numpy() @ W1.T)
    u, v = uv[:, :12], uv[:, 12:]
    expect = (u * v / (1 + np.exp(-v))) @ W2.T
    assert np.allclose(mlp(x).detach().numpy(), expect, atol=1e-4)


def test_ngpt_scales_keep_the_activation_dtype_under_autocast():
    """float32 scale parameters (s_uv, s_z, s_qk) do not promote bf16 activations (Lightning's "bf16-mixed")."""
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    assert ScaledParam(8, 1.0)(x).dtype == torch.bfloat16
    blk = normlight.get_placement("ngpt")(8, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, k, v = blk.attn.project(x)
    assert q.dtype == k.dtype == v.dtype == torch.bfloat16
