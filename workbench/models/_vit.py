"""A plain-torch Vision Transformer, the family most pathology foundation models belong to.

One module covers UNI, UNI2-h, Virchow2, H-optimus, Phikon, Lunit and kaiko: they differ only
in width, depth, patch size and a handful of switches, all keyword arguments of
:class:`VisionTransformer`:

* ``reg_tokens`` — extra learnt "register" tokens placed after the class token; they take part
  in attention and are dropped from the output;
* ``class_pos`` / ``reg_pos`` — which prefix tokens have an entry in the position table: the
  class token only (original ViT, DINO, Hugging Face, also with registers), the class token and
  the registers (timm's default with ``reg_tokens``: Virchow2), or none, the table covering the
  patches only (timm's ``no_embed_class``: UNI2-h, the DINOv2-register models);
* ``layer_scale`` — a learnt per-channel factor on each residual branch (DINOv2, UNI …);
* ``mlp`` — ``"gelu"`` (two linear layers) or ``"swiglu"``, packed as the models store it: the
  first layer gives ``mlp_hidden`` channels, the first half gates the second half through SiLU,
  and the second layer maps ``mlp_hidden // 2`` channels back;
* ``pooling`` — what the embedding is: the class token (``"cls"``), the class token
  concatenated with the mean of the patch tokens (``"cls+mean"``, Virchow2), or the mean of the
  patch tokens (``"mean"``); always after the final layer norm, registers never pooled.

The parameter names are timm's (``patch_embed.proj``, ``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma``
…), so a timm-layout state dict loads as it is; :mod:`workbench.models._vit_weights` renames the
other layouts to these. The model takes normalised ``(B, 3, H, W)`` images; sizes other than
``img_size`` get bicubic-interpolated position embeddings, as timm's ``dynamic_img_size`` and
Hugging Face's ``interpolate_pos_encoding`` do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench._errors import EncoderError

__all__ = ["POOLINGS", "VisionTransformer"]

#: What the embedding of an image is made of (see the module documentation).
POOLINGS = ("cls", "cls+mean", "mean")
#: Feed-forward kinds.
MLPS = ("gelu", "swiglu")


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches projected to ``embed_dim`` channels."""

    def __init__(self, *, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, D, H // p, W // p)``."""
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with one fused query/key/value projection."""

    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class LayerScale(nn.Module):
    """A learnt per-channel factor (``gamma``) on a residual branch."""

    def __init__(self, *, dim: int, init: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUPacked(nn.Module):
    """SwiGLU with the gate and value projections packed in ``fc1`` (gate first)."""

    def __init__(self, *, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden // 2, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(F.silu(gate) * value)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``+ ls2(mlp(norm2(x)))``."""

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        mlp: str,
        layer_scale: bool,
        qkv_bias: bool,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias)
        self.ls1 = LayerScale(dim=dim) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        ffn = SwiGLUPacked if mlp == "swiglu" else Mlp
        self.mlp = ffn(dim=dim, hidden=mlp_hidden)
        self.ls2 = LayerScale(dim=dim) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """A ViT encoder: normalised ``(B, 3, H, W)`` images -> ``(B, out_dim)`` embeddings.

    Parameters
    ----------
    embed_dim
        Token width.
    depth
        Number of transformer blocks.
    num_heads
        Attention heads (must divide ``embed_dim``).
    patch_size
        Side of the square patches, in pixels.
    img_size
        Image side the position table was learnt for (its grid is ``img_size // patch_size``
        a side); other sizes are served by interpolating it.
    mlp
        ``"gelu"`` or ``"swiglu"`` (packed, gate first).
    mlp_hidden
        Output width of the first feed-forward layer (for ``"swiglu"`` the packed width, twice
        the gated width). Default ``int(embed_dim * mlp_ratio)``, as timm computes it.
    mlp_ratio
        Used when ``mlp_hidden`` is not given.
    reg_tokens
        Number of register tokens (0 for none).
    class_pos
        Whether the position table has an entry for the class token.
    reg_pos
        Whether it also has entries for the register tokens (after the class token's; needs
        ``class_pos``).
    layer_scale
        Whether each residual branch has a learnt per-channel scale.
    qkv_bias
        Whether the query/key/value projection has a bias.
    norm_eps
        Epsilon of every layer norm (timm 1e-6; Hugging Face ``ViTModel`` 1e-12).
    pooling
        ``"cls"``, ``"cls+mean"`` or ``"mean"`` (see the module documentation).
    pos_antialias
        Whether the bicubic resampling of the position table for other image sizes is
        antialiased: timm and Hugging Face ``Dinov2WithRegistersModel`` do (``True``),
        Hugging Face ``ViTModel`` and ``Dinov2Model`` do not. Only matters away from
        ``img_size``.

    Raises
    ------
    EncoderError
        A configuration that cannot be built (the message names the setting).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        patch_size: int,
        img_size: int = 224,
        mlp: str = "gelu",
        mlp_hidden: int | None = None,
        mlp_ratio: float = 4.0,
        reg_tokens: int = 0,
        class_pos: bool = True,
        reg_pos: bool = False,
        layer_scale: bool = False,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        pooling: str = "cls",
        pos_antialias: bool = True,
    ) -> None:
        super().__init__()
        for key, value in (
            ("embed_dim", embed_dim),
            ("depth", depth),
            ("num_heads", num_heads),
            ("patch_size", patch_size),
            ("img_size", img_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EncoderError(
                    f"ViT setting {key} must be a positive whole number, got {value!r}"
                )
        if embed_dim % num_heads:
            raise EncoderError(
                f"ViT setting num_heads={num_heads} must divide embed_dim={embed_dim}"
            )
        if img_size < patch_size:
            raise EncoderError(f"ViT img_size={img_size} is smaller than patch_size={patch_size}")
        if mlp not in MLPS:
            raise EncoderError(f"ViT setting mlp={mlp!r} is not one of {MLPS}")
        if pooling not in POOLINGS:
            raise EncoderError(f"ViT setting pooling={pooling!r} is not one of {POOLINGS}")
        if mlp_hidden is None:
            mlp_hidden = int(embed_dim * float(mlp_ratio))
        if isinstance(mlp_hidden, bool) or not isinstance(mlp_hidden, int) or mlp_hidden < 1:
            raise EncoderError(
                f"ViT setting mlp_hidden must be a positive whole number, got {mlp_hidden!r}"
            )
        if mlp == "swiglu" and mlp_hidden % 2:
            raise EncoderError(
                f"ViT setting mlp_hidden={mlp_hidden} must be even with mlp='swiglu' (packed gate "
                "and value halves)"
            )
        if isinstance(reg_tokens, bool) or not isinstance(reg_tokens, int) or reg_tokens < 0:
            raise EncoderError(f"ViT setting reg_tokens must be 0 or more, got {reg_tokens!r}")
        if reg_pos and not class_pos:
            raise EncoderError("ViT setting reg_pos=True needs class_pos=True (timm's layout)")
        if not float(norm_eps) > 0:
            raise EncoderError(f"ViT setting norm_eps must be positive, got {norm_eps!r}")
        self.config = {
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": num_heads,
            "patch_size": patch_size,
            "img_size": img_size,
            "mlp": mlp,
            "mlp_hidden": mlp_hidden,
            "reg_tokens": reg_tokens,
            "class_pos": bool(class_pos),
            "reg_pos": bool(reg_pos),
            "layer_scale": bool(layer_scale),
            "qkv_bias": bool(qkv_bias),
            "norm_eps": float(norm_eps),
            "pooling": pooling,
            "pos_antialias": bool(pos_antialias),
        }
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.num_prefix = 1 + reg_tokens
        self.class_pos = bool(class_pos)
        self.reg_pos = bool(reg_pos) and reg_tokens > 0
        self.num_prefix_pos = (1 if class_pos else 0) + (reg_tokens if self.reg_pos else 0)
        self.pooling = pooling
        self.pos_antialias = bool(pos_antialias)
        self.out_dim = 2 * embed_dim if pooling == "cls+mean" else embed_dim
        self.patch_embed = PatchEmbed(patch_size=patch_size, embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        n_pos = self.grid**2 + self.num_prefix_pos
        self.pos_embed = nn.Parameter(torch.empty(1, n_pos, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # (cheap on the meta device, too)
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_hidden=mlp_hidden,
                mlp=mlp,
                layer_scale=layer_scale,
                qkv_bias=qkv_bias,
                norm_eps=norm_eps,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

    def _patch_positions(self, h: int, w: int) -> torch.Tensor:
        """Position embeddings of an ``h`` x ``w`` patch grid ``(1, h * w, D)``."""
        table = self.pos_embed[:, self.num_prefix_pos :]
        if (h, w) == (self.grid, self.grid):
            return table
        grid = table.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid.float(),
            size=(h, w),
            mode="bicubic",
            align_corners=False,
            antialias=self.pos_antialias,
        ).to(table.dtype)
        return grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm: ``(B, 1 + reg_tokens + patches, D)``, class first.

        Parameters
        ----------
        x
            Normalised ``(B, 3, H, W)`` images, ``H`` and ``W`` at least ``patch_size``.

        Returns
        -------
        torch.Tensor
            The class token, the register tokens, then the patch tokens in row-major order.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise EncoderError(f"a ViT takes (B, 3, H, W) images, got shape {tuple(x.shape)}")
        if min(x.shape[2:]) < self.patch_size:
            raise EncoderError(
                f"images of {tuple(x.shape[2:])} px are smaller than one {self.patch_size}-px patch"
            )
        x = self.patch_embed(x)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self._patch_positions(h, w)
        cls = self.cls_token.expand(b, -1, -1)
        if self.class_pos:
            cls = cls + self.pos_embed[:, :1]
        prefix = [cls]
        if self.reg_token is not None:
            reg = self.reg_token.expand(b, -1, -1)
            prefix.append(reg + self.pos_embed[:, 1 : self.num_prefix_pos] if self.reg_pos else reg)
        x = torch.cat([*prefix, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The embedding of :meth:`forward_tokens`' output.

        Parameters
        ----------
        tokens
            ``(B, 1 + reg_tokens + patches, D)`` tokens, class token first.

        Returns
        -------
        torch.Tensor
            ``(B, out_dim)``: the class token, the mean patch token, or both concatenated
            (``pooling``).
        """
        cls = tokens[:, 0]
        if self.pooling == "cls":
            return cls
        mean = tokens[:, self.num_prefix :].mean(dim=1)
        return mean if self.pooling == "mean" else torch.cat([cls, mean], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed images.

        Parameters
        ----------
        x
            Normalised ``(B, 3, H, W)`` images.

        Returns
        -------
        torch.Tensor
            ``(B, out_dim)`` embeddings.
        """
        return self.pool(self.forward_tokens(x))

    @property
    def num_params(self) -> int:
        """Number of parameters."""
        return sum(math.prod(p.shape) for p in self.parameters())

    def extra_repr(self) -> str:
        """The configuration in one line, for ``repr(model)``.

        Returns
        -------
        str
            ``embed_dim=…, depth=…, heads=…`` and the other sizes.
        """
        c = self.config
        return (
            f"embed_dim={c['embed_dim']}, depth={c['depth']}, heads={c['num_heads']}, "
            f"patch={c['patch_size']}, img_size={c['img_size']}, mlp={c['mlp']}, "
            f"reg_tokens={c['reg_tokens']}, pooling={c['pooling']!r}"
        )
