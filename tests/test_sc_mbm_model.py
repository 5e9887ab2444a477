"""SC-MBM model: MinD-Vis's parameter layout, sizes, masking, loss and the stage B encode path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mindvis.models import (
    ENCODER_PREFIXES,
    PRESETS,
    ArchSpec,
    MbmModelConfig,
    ScMbm,
    count_parameters,
    fit_voxels,
    interpolate_pos_table,
    resolve_arch,
    sincos_table,
)
from mindvis.utils.errors import ConfigError

TINY = PRESETS["tiny"]


def expected_shapes(arch: ArchSpec, n: int) -> dict[str, tuple[int, ...]]:
    """The reference state dict (docs/reference.md §5.1), written out by hand."""
    d, dd, p = arch.embed_dim, arch.decoder_embed_dim, arch.patch_size
    h, hd = int(d * arch.mlp_ratio), int(dd * arch.mlp_ratio)
    out = {"cls_token": (1, 1, d), "pos_embed": (1, n + 1, d), "patch_embed.proj.weight": (d, 1, p),
           "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,), "mask_token": (1, 1, dd),
           "decoder_embed.weight": (dd, d), "decoder_embed.bias": (dd,), "decoder_pos_embed": (1, n + 1, dd),
           "decoder_norm.weight": (dd,), "decoder_norm.bias": (dd,), "decoder_pred.weight": (p, dd),
           "decoder_pred.bias": (p,)}
    for prefix, depth, w, hid in (("blocks", arch.depth, d, h), ("decoder_blocks", arch.decoder_depth, dd, hd)):
        for i in range(depth):
            b = f"{prefix}.{i}."
            out |= {b + "norm1.weight": (w,), b + "norm1.bias": (w,), b + "attn.qkv.weight": (3 * w, w),
                    b + "attn.qkv.bias": (3 * w,), b + "attn.proj.weight": (w, w), b + "attn.proj.bias": (w,),
                    b + "norm2.weight": (w,), b + "norm2.bias": (w,), b + "mlp.fc1.weight": (hid, w),
                    b + "mlp.fc1.bias": (hid,), b + "mlp.fc2.weight": (w, hid), b + "mlp.fc2.bias": (w,)}
    return out


def test_state_dict_keys_and_shapes_match_reference_layout():
    model = ScMbm(TINY, n_tokens=7)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_shapes(TINY, 7)


def test_paper_preset_sizes_on_meta_device():
    with torch.device("meta"):
        model = ScMbm(PRESETS["paper"], n_tokens=291)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected_shapes(PRESETS["paper"], 291)
    d = 1024
    per_block = (3 * d * d + 3 * d) + (d * d + d) + 2 * (d * d + d) + 4 * d
    encoder = 24 * per_block + (16 * d + d) + d + 2 * d  # blocks, patch embed, cls, final norm
    assert count_parameters(model, ENCODER_PREFIXES, trainable_only=True) == encoder == 151_261_184


def test_layer_norms_use_eps_1e5_and_tables_are_frozen():
    model = ScMbm(TINY, n_tokens=5)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * TINY.depth + 1 + 2 * TINY.decoder_depth + 1
    assert all(m.eps == 1e-5 for m in norms)
    assert not model.pos_embed.requires_grad and not model.decoder_pos_embed.requires_grad
    assert model.cls_token.requires_grad and model.mask_token.requires_grad


def test_sincos_table_values_by_hand():
    table = sincos_table(8, 4)  # (1, 5, 8), row 0 = cls
    assert table.shape == (1, 5, 8)
    assert torch.all(table[0, 0] == 0)
    pos = 3
    for k in range(4):
        w = 1.0 / 10000 ** (k / 4)
        assert table[0, 1 + pos, k].item() == pytest.approx(math.sin(pos * w), abs=1e-6)
        assert table[0, 1 + pos, 4 + k].item() == pytest.approx(math.cos(pos * w), abs=1e-6)


def test_interpolation_keeps_cls_row_and_is_linear():
    rows = torch.arange(4, dtype=torch.float32)[None, :, None].repeat(1, 1, 2)  # values 0,1,2,3
    table = torch.cat([torch.full((1, 1, 2), 9.0), rows], dim=1)
    same = interpolate_pos_table(table, 4)
    assert torch.equal(same, table)
    up = interpolate_pos_table(table, 8, "linear")
    assert up.shape == (1, 9, 2) and torch.all(up[0, 0] == 9.0)
    # align_corners=False: output i samples input at (i + 0.5) / 2 - 0.5, clamped to [0, 3]
    expected = np.clip((np.arange(8) + 0.5) / 2 - 0.5, 0, 3)
    assert np.allclose(up[0, 1:, 0].numpy(), expected)
    near = interpolate_pos_table(table, 8, "nearest")
    assert torch.equal(near[0, 1:, 0], F.interpolate(rows.transpose(1, 2), size=8)[0, 0])


def test_fit_voxels_wraps_or_cuts():
    x = np.arange(10, dtype=np.float32)[None]
    assert fit_voxels(x, 13).tolist() == [list(range(10)) + [0, 1, 2]]
    assert fit_voxels(x, 6).tolist() == [list(range(6))]


def test_masking_keeps_lowest_noise_tokens():
    model = ScMbm(TINY, n_tokens=8)
    tokens = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 8, 1)
    noise = torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.5], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]])
    kept, mask, ids_restore = model.random_masking(tokens, 0.75, noise)
    assert kept.shape == (2, 2, 1)  # int(8 * 0.25)
    assert kept[0, :, 0].tolist() == [1.0, 3.0] and kept[1, :, 0].tolist() == [8.0, 9.0]
    assert mask[0].tolist() == [1, 0, 1, 0, 1, 1, 1, 1] and mask[1].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert torch.equal(torch.gather(torch.argsort(noise, 1), 1, ids_restore), torch.arange(8).repeat(2, 1))


def test_loss_is_mse_over_masked_patches_only():
    torch.manual_seed(0)
    model = ScMbm(TINY, n_tokens=6)
    x = torch.randn(3, 96)
    noise = torch.rand(3, 6)
    loss, pred, mask = model(x, 0.5, noise)
    target = x.reshape(3, 6, 16)
    per_patch = ((pred - target) ** 2).mean(-1)
    assert mask.sum().item() == 3 * 3
    assert loss.item() == pytest.approx((per_patch * mask).sum().item() / 9, rel=1e-6)


def test_prediction_does_not_depend_on_order_within_kept_and_masked_sets():
    """Unshuffling is right: noises that keep the same token set give the same prediction."""
    torch.manual_seed(1)
    model = ScMbm(TINY, n_tokens=8).eval()
    x = torch.randn(1, 128)
    a = torch.tensor([[0.1, 0.9, 0.2, 0.8, 0.7, 0.6, 0.95, 0.85]])  # keeps tokens 0, 2
    b = torch.tensor([[0.2, 0.6, 0.1, 0.95, 0.9, 0.8, 0.7, 0.85]])  # keeps 2, 0: same set, other order
    with torch.no_grad():
        la, pa, ma = model(x, 0.75, a)
        lb, pb, mb = model(x, 0.75, b)
    assert torch.equal(ma, mb)
    assert torch.allclose(pa, pb, atol=1e-5) and abs(la.item() - lb.item()) < 1e-5


def test_encode_is_all_tokens_without_cls():
    torch.manual_seed(2)
    model = ScMbm(TINY, n_tokens=5).eval()
    x = torch.randn(4, 80)
    with torch.no_grad():
        z = model.encode(x)
        model.cls_token.add_(10.0)  # the cls token never enters the stage B path
        z2 = model.encode(x)
        z_one = model.encode(x[1:2])  # and samples do not interact
    assert z.shape == (4, 5, TINY.embed_dim)
    assert torch.equal(z, z2)
    assert torch.allclose(z[1:2], z_one, atol=1e-6)
    # final LayerNorm (weight 1, bias 0 at init): zero mean per token
    assert torch.allclose(z.mean(-1), torch.zeros(4, 5), atol=1e-5)


def test_wrong_input_length_is_a_clear_error():
    model = ScMbm(TINY, n_tokens=5)
    with pytest.raises(ValueError, match=r"expects \(B, 1, 80\)"):
        model(torch.randn(2, 81))


def test_preset_overrides_and_validation():
    arch = resolve_arch(MbmModelConfig(preset="tiny", depth=2, decoder_embed_dim=48))
    assert arch.depth == 2 and arch.decoder_embed_dim == 48 and arch.embed_dim == TINY.embed_dim
    with pytest.raises(ConfigError, match="not a multiple"):
        resolve_arch(MbmModelConfig(preset="tiny", num_heads=5))
    with pytest.raises(ConfigError, match="preset"):
        resolve_arch(MbmModelConfig(preset="huge"))
