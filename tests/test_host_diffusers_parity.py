"""Fill-layout parity with diffusers (optional: needs the ``test`` extra's ``diffusers``).

A diffusers ``FluxTransformer2DModel`` (in_channels 384, tiny widths) is saved as safetensors and loaded by
ComfyUI's own UNETLoader (diffusers key conversion, FluxInpaint), prepared by ACE++ Prepare Flux Model and fed by
the pack's ACE++ LoRA Conditioning through the real executor. The same step is then computed by diffusers from
inputs built here in float64 by diffusers' own conventions (packed [noise | image latent | mask folded 8x8]).
Two checks: the tokens ComfyUI feeds img_in equal that construction, and both transformers agree.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graphs import Graph, sampler
from PIL import Image
from tolerances import assert_catches, network_bound, sum_bound

pytestmark = pytest.mark.numeric

diffusers = pytest.importorskip("diffusers")

W, H = 96, 80
HOLE = (13, 19, 37, 43)
SEED = 5


@pytest.fixture(scope="module")
def diffusers_fill(comfy_host, tiny_models, tmp_path_factory):
    """A random tiny diffusers Flux Fill transformer, and its safetensors in a diffusion_models folder."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1, in_channels=384, out_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
        num_attention_heads=2, joint_attention_dim=768, pooled_projection_dim=768, guidance_embeds=True,
        axes_dims_rope=(4, 14, 14),
    ).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            # RMSNorm scales near 1; everything else small and non-zero (diffusers zero-inits some layers).
            p.copy_(1.0 + 0.02 * noise if "norm" in name and p.ndim == 1 else 0.02 * noise)
    folder = tmp_path_factory.mktemp("diffusers_models")
    # Saved from clones: ComfyUI's conversion would otherwise pop and rewrite the caller's tensors.
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
              str(folder / "diffusers_flux_fill.safetensors"))
    comfy_host.add_model_dir("diffusion_models", folder)
    return model


def _fold_mask(mask: torch.Tensor) -> torch.Tensor:
    """[H, W] pixel mask -> [1, 64, H/8, W/8], channel dy*8+dx (diffusers' prepare_mask_latents order)."""
    h, w = mask.shape[0] // 8, mask.shape[1] // 8
    out = torch.empty(1, 64, h, w, dtype=mask.dtype)
    for dy in range(8):
        for dx in range(8):
            out[0, dy * 8 + dx] = mask[dy::8, dx::8]
    return out


def _pack(x: torch.Tensor) -> torch.Tensor:
    """diffusers' _pack_latents: [B, C, H, W] -> [B, (H/2)(W/2), C*4], feature c*4 + ph*2 + pw."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def test_fill_layout_matches_diffusers(comfy_host, tiny_models, diffusers_fill, input_image, monkeypatch):
    import comfy.ldm.flux.model as flux_model
    import comfy.sd

    calls, latents = [], []
    forward_orig, encode = flux_model.Flux.forward_orig, comfy.sd.VAE.encode

    def recording(self, img, img_ids, txt, txt_ids, timesteps, y, guidance=None, *args, **kwargs):
        out = forward_orig(self, img, img_ids, txt, txt_ids, timesteps, y, guidance, *args, **kwargs)
        calls.append({k: v.detach().clone() for k, v in
                      dict(img=img, txt=txt, timesteps=timesteps, y=y, guidance=guidance, out=out).items()})
        return out

    def recording_encode(self, pixels):
        out = encode(self, pixels)
        latents.append(out.detach().clone())
        return out

    monkeypatch.setattr(flux_model.Flux, "forward_orig", recording)
    monkeypatch.setattr(comfy.sd.VAE, "encode", recording_encode)
    comfy_host.executor.reset()

    name = input_image("diffusers_fill.png", W, H, HOLE, seed=9)
    g = Graph()
    model = g.add("UNETLoader", unet_name="diffusers_flux_fill.safetensors", weight_dtype="default")
    model = g.add("ACEPlusModelPatch", model=model[0])
    text = g.add("ACEPlusTestOnlyT5StandIn", text="a hat", context_dim=768, pooled_dim=768, tokens=8)
    text = g.add("FluxGuidance", conditioning=text[0], guidance=30.0)
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    img = g.add("LoadImage", image=name)
    cond = g.add("ACEPlusLoraConditioning", positive=text[0], negative=text[0], vae=vae[0], pixels=img[0],
                 mask=img[1], noise_mask=False)
    samples = sampler(g, model[0], cond[0], cond[1], cond[2], steps=1, seed=SEED)
    g.add("ACEPlusTestOnlyProbe", label="diffusers_fill", latent=samples[0])
    try:
        comfy_host.run(g.prompt())
    finally:
        comfy_host.executor.reset()
    (call,) = calls
    (latent,) = latents

    # Inputs by diffusers' conventions, in float64.
    latent = latent.double()
    b, c, h, w = latent.shape
    image_latent = (latent - 0.1159) * 0.3611
    alpha = np.asarray(Image.open(comfy_host.input_dir / name))[..., 3].astype(np.float64) / 255.0
    mask = _fold_mask(torch.from_numpy(1.0 - alpha))
    sigma = float(call["timesteps"][0])
    noise = torch.randn((b, c, h, w), generator=torch.Generator().manual_seed(SEED)).double()
    noisy = sigma * noise + (1.0 - sigma) * image_latent
    hidden = torch.cat([_pack(noisy), _pack(image_latent), _pack(mask)], dim=2)
    assert hidden.shape == (1, (h // 2) * (w // 2), 384)
    layout_err = (call["img"].double() - hidden).abs().max().item()
    # ComfyUI builds the input in float32: latent_in (2 operations), noising (3), copies; magnitude: the largest value.
    layout_tol = assert_catches(sum_bound(5, magnitude=hidden.abs().max().item()))
    assert layout_err < layout_tol, f"Fill model input differs from diffusers' packing by {layout_err:.2e}"

    img_ids = torch.zeros(h // 2, w // 2, 3)
    img_ids[..., 1] = torch.arange(h // 2)[:, None]
    img_ids[..., 2] = torch.arange(w // 2)[None, :]
    with torch.no_grad():
        expected = diffusers_fill(
            hidden_states=hidden.float(),
            encoder_hidden_states=call["txt"].float(),
            pooled_projections=call["y"].float(),
            timestep=call["timesteps"].float(),
            img_ids=img_ids.reshape(-1, 3),
            txt_ids=torch.zeros(call["txt"].shape[1], 3),
            guidance=call["guidance"].float(),
            return_dict=False,
        )[0]
    got = call["out"].float()
    assert got.shape == expected.shape == (1, (h // 2) * (w // 2), 64)
    rel = ((got - expected).norm() / expected.norm()).item()
    assert float(call["guidance"][0]) == 30.0
    # Both run the same float32 maths with their own kernels: the transformer's layers, plus attention's reductions
    # over the head dimension and the joint sequence.
    tol = assert_catches(network_bound(diffusers_fill, extra_fan_ins=(128, hidden.shape[1] + call["txt"].shape[1])))
    assert rel < tol, f"ComfyUI vs diffusers relative error {rel:.2e} (tolerance {tol:.1e})"
