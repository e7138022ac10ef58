"""API-format graph builders for the tests (the JSON ComfyUI's /prompt endpoint takes)."""

from __future__ import annotations


class Graph:
    """A tiny builder: ``g.add("UNETLoader", unet_name=...)`` returns a node handle; ``h[0]`` is its output 0."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}

    def add(self, class_type: str, **inputs) -> _Node:
        node_id = str(len(self.nodes) + 1)
        resolved = {k: (v.link if isinstance(v, _Out) else v) for k, v in inputs.items()}
        self.nodes[node_id] = {"class_type": class_type, "inputs": resolved}
        return _Node(node_id)

    def prompt(self) -> dict:
        return {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in self.nodes.items()}


class _Out:
    def __init__(self, node_id: str, index: int) -> None:
        self.link = [node_id, index]


class _Node:
    def __init__(self, node_id: str) -> None:
        self.id = node_id

    def __getitem__(self, index: int) -> _Out:
        return _Out(self.id, index)


def sampler(g: Graph, model, positive, negative, latent, *, steps: int = 2, seed: int = 7, denoise: float = 1.0):
    return g.add(
        "KSampler",
        model=model,
        seed=seed,
        steps=steps,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=positive,
        negative=negative,
        latent_image=latent,
        denoise=denoise,
    )


def clip_l_text(g: Graph, text: str, guidance: float = 30.0):
    """The real text path for tiny models (context/pooled widths 768): CLIPLoader + CLIPTextEncode + FluxGuidance."""
    clip = g.add("CLIPLoader", clip_name="clip_l_random.safetensors", type="stable_diffusion")
    cond = g.add("CLIPTextEncode", text=text, clip=clip[0])
    return g.add("FluxGuidance", conditioning=cond[0], guidance=guidance)


def tiny_loaders(g: Graph, unet: str, text: str):
    """The loaders of a tiny-model graph: UNETLoader(unet), the real CLIP-L text path, the tiny 16-channel VAE."""
    model = g.add("UNETLoader", unet_name=unet, weight_dtype="default")
    cond = clip_l_text(g, text)
    vae = g.add("VAELoader", vae_name="tiny_taef1.safetensors")
    return model, cond, vae
