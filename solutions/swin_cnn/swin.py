"""A Swin Transformer (Liu et al., 2021): self-attention inside local windows that shift.

Between blocks a feature map is channels-last, (B, H, W, C). A stage is a run of blocks that
attend inside ws x ws windows -- every second block with its windows shifted by ws // 2, so that
information crosses window borders -- and patch merging halves H and W and doubles C between
stages, as a CNN's strided convolutions do.

Parameter names (the grader and `load_torchvision_weights` rely on them) follow torchvision's
SwinTransformer inside each block: patch_embed.{proj, norm},
stages.<i>.<j>.{norm1, attn.qkv, attn.proj, attn.relative_position_bias_table, norm2, mlp.fc1,
mlp.fc2}, merges.<i>.{norm, reduction}, norm, head.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import StochasticDepth


@dataclass
class SwinConfig:
    image_size: int = 28
    patch_size: int = 4                  # 28 x 28 -> 7 x 7 tokens (padded to 8 x 8 windows)
    in_channels: int = 1
    num_classes: int = 10
    embed_dim: int = 48                  # C of the first stage; stage i has C * 2**i
    depths: tuple[int, ...] = (2, 2)     # blocks per stage
    num_heads: tuple[int, ...] = (3, 6)  # heads per stage
    window_size: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    drop_path: float = 0.0               # stochastic depth of the last block; 0 for the first
    norm_eps: float = 1e-5


# --------------------------------------------------------------------- swin.window_partition

def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:  # x: (B, H, W, C)
    """Cut a feature map into non-overlapping ws x ws windows (H and W multiples of ws).

    Returns (B * nW, ws * ws, C) with nW = (H / ws) * (W / ws). Window (b, i, j) -- the i-th row
    and j-th column of windows of image b -- is number b * nW + i * (W / ws) + j, and the ws * ws
    tokens inside a window are in row-major order (as torchvision orders them).
    """
    B, H, W, C = x.shape
    ws = window_size
    ### BEGIN SOLUTION
    # TODO(swin.window_partition): view x as (B, H/ws, ws, W/ws, ws, C), bring the two
    #   window-grid axes next to each other (permute), then flatten to (B * nW, ws * ws, C).
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, H/ws, W/ws, ws, ws, C)
    return x.reshape(-1, ws * ws, C)  # (B * nW, ws * ws, C)
    ### END SOLUTION


def window_reverse(windows: torch.Tensor, window_size: int, H: int, W: int) -> torch.Tensor:
    """The inverse of window_partition: windows (B * nW, ws * ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    ws = window_size
    ### BEGIN SOLUTION
    # TODO(swin.window_partition): undo window_partition's steps in reverse order.
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)  # (B, H/ws, W/ws, ws, ws, C)
    x = x.permute(0, 1, 3, 2, 4, 5)                    # (B, H/ws, ws, W/ws, ws, C)
    return x.reshape(-1, H, W, C)                      # (B, H, W, C)
    ### END SOLUTION


# --------------------------------------------------------------------- swin.window_attention

def relative_position_index(window_size: int) -> torch.Tensor:
    """For tokens i, j of a ws x ws window (row-major), the row of the bias table they use.

    With (y_i, x_i) token i's position, dy = y_i - y_j and dx = x_i - x_j lie in
    [-(ws-1), ws-1]; the index is (dy + ws - 1) * (2 ws - 1) + (dx + ws - 1), in
    [0, (2 ws - 1)^2). Returns a long tensor (ws*ws, ws*ws).
    """
    ### BEGIN SOLUTION
    # TODO(swin.window_attention): positions (y, x) of the N = ws*ws tokens, pairwise
    #   differences dy, dx (N, N), shifted to start at 0, combined row-major as the docstring says.
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()                              # (N,)
    dy = ys[:, None] - ys[None, :] + window_size - 1                 # (N, N)
    dx = xs[:, None] - xs[None, :] + window_size - 1                 # (N, N)
    return dy * (2 * window_size - 1) + dx
    ### END SOLUTION


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned relative position bias.

    For the N = ws*ws tokens of one window, with q, k, v = x W_q, x W_k, x W_v split into H heads
    of size d = C / H (qkv is one Linear(C, 3C) whose output is [q | k | v], as in the ViT lab):
        head_h = softmax(q_h k_h^T / sqrt(d) + B_h + M) v_h         (softmax over the keys)
        out    = concat(head_1, ..., head_H) W_o
    B_h[i, j] = relative_position_bias_table[relative_position_index[i, j], h], one learned
    number per head and relative offset (dy, dx); M is the shifted-window mask (0 or -100) of
    the window, or nothing.
    """

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.window_size = window_size
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))  # ((2 ws - 1)^2, H)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # Not in the state dict: it follows from window_size (computed when first needed).
        self.register_buffer("relative_position_index", None, persistent=False)

    def relative_position_bias(self) -> torch.Tensor:
        """B as (H, N, N): B[h, i, j] = table[index[i, j], h]."""
        if self.relative_position_index is None:
            self.relative_position_index = relative_position_index(self.window_size).to(
                self.relative_position_bias_table.device)
        N = self.window_size ** 2
        bias = self.relative_position_bias_table[self.relative_position_index.flatten()]
        return bias.view(N, N, -1).permute(2, 0, 1)  # (H, N, N)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * nW, N, C), the windows of B images; mask: (nW, N, N) or None.

        Window w of every image gets mask[w] (windows are ordered image by image, see
        window_partition). Returns (B * nW, N, C).
        """
        BW, N, C = x.shape
        ### BEGIN SOLUTION
        # TODO(swin.window_attention): q, k, v of (B*nW, H, N, d) as in the ViT lab; scores
        #   q k^T / sqrt(d) plus self.relative_position_bias() (H, N, N); with a mask, view the
        #   scores as (B, nW, H, N, N) and add mask (nW, N, N) to each image's windows; softmax
        #   over the keys, weighted sum of v, merge the heads, proj.
        qkv = self.qkv(x).reshape(BW, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                               # each (B*nW, H, N, d)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)           # (B*nW, H, N, N)
        attn = attn + self.relative_position_bias()
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(BW // nW, nW, self.num_heads, N, N) + mask[:, None]
            attn = attn.view(BW, self.num_heads, N, N)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(BW, N, C)                 # (B*nW, N, C)
        return self.proj(out)
        ### END SOLUTION


# ---------------------------------------------------------------------- swin.shifted_window

def shifted_window_mask(H: int, W: int, window_size: int, shift_size: int) -> torch.Tensor:
    """The attention mask of the windows of an (H, W) map rolled by -shift_size on both axes.

    Rolling moves the first shift_size rows (columns) to the bottom (right), so the last row
    (column) of windows holds tokens that were far apart in the image. Along each axis the
    rolled map has three bands, [0, H - ws), [H - ws, H - s) and [H - s, H); tokens i, j of a
    window may attend to each other only if they lie in the same band along both axes:
        M[w, i, j] = 0 if so, -100 otherwise  (-100: softmax weight ~ e^-100, i.e. zero).
    Returns (nW, N, N) float32, windows and tokens ordered as window_partition orders them.
    """
    ### BEGIN SOLUTION
    # TODO(swin.shifted_window): label every position of an (H, W) map with its band pair
    #   (one of 9), cut the label map into windows with window_partition, and compare labels
    #   pairwise inside each window.
    ws, s = window_size, shift_size
    labels = torch.zeros(1, H, W, 1)
    bands = ((0, -ws), (-ws, -s), (-s, None))
    count = 0
    for h0, h1 in bands:
        for w0, w1 in bands:
            labels[:, h0:h1, w0:w1] = count
            count += 1
    labels = window_partition(labels, ws).squeeze(-1)           # (nW, N)
    same = labels[:, :, None] == labels[:, None, :]             # (nW, N, N)
    return torch.zeros(same.shape).masked_fill(~same, -100.0)
    ### END SOLUTION


class MLP(nn.Module):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, as torchvision's MLP in a Swin block."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., dim)
        return self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(x)))))


class SwinBlock(nn.Module):
    """Pre-norm block: x + attention(norm1(x)), then x + mlp(norm2(x)), on (B, H, W, C) maps.

    The attention is window attention; with shift_size > 0 the windows are shifted by
    shift_size (a cyclic shift of the map, see shifted_window_attention).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int = 0,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, drop_path: float = 0.0,
                 norm_eps: float = 1e-5):
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size {window_size})")
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)
        self.dropout = nn.Dropout(dropout)
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        x = x + self.drop_path(self.dropout(self.attention(self.norm1(x))))  # (B, H, W, C)
        return x + self.drop_path(self.mlp(self.norm2(x)))                   # (B, H, W, C)

    def attention(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        """Pad H and W with zeros to multiples of the window (bottom and right), attend in
        (shifted) windows, crop again -- as torchvision does. When one window covers the whole
        map there is nothing to shift. (torchvision decides this per axis; for the square maps
        of this lab both agree.)"""
        B, H, W, C = x.shape
        ws = self.window_size
        x = F.pad(x, (0, 0, 0, -W % ws, 0, -H % ws))                 # (B, Hp, Wp, C)
        shift = self.shift_size if min(x.shape[1], x.shape[2]) > ws else 0
        return self.shifted_window_attention(x, shift)[:, :H, :W].contiguous()

    def shifted_window_attention(self, x: torch.Tensor, shift: int) -> torch.Tensor:
        """Window attention on x (B, H, W, C), H and W multiples of the window, with the
        windows shifted by `shift` (0: not shifted):

        1. roll the map by -shift along H and W (torch.roll), so that the shifted windows
           become ordinary windows of the rolled map;
        2. window_partition, self.attn with shifted_window_mask(H, W, ws, shift) (no mask
           when shift is 0), window_reverse;
        3. roll back by +shift, so every token returns to its own position.
        Returns (B, H, W, C).
        """
        B, H, W, C = x.shape
        ws = self.window_size
        ### BEGIN SOLUTION
        # TODO(swin.shifted_window): roll by (-shift, -shift) over dims (1, 2); partition;
        #   attention with the mask (on x's device and dtype) when shift > 0; reverse; roll back.
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = shifted_window_mask(H, W, ws, shift).to(x) if shift else None
        windows = self.attn(window_partition(x, ws), mask)        # (B * nW, N, C)
        x = window_reverse(windows, ws, H, W)                      # (B, H, W, C)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        return x
        ### END SOLUTION


# ----------------------------------------------------------------------- swin.patch_merging

class PatchMerging(nn.Module):
    """Halve H and W, double C: each 2x2 neighbourhood's four C-vectors are concatenated,
    normalised (LayerNorm(4C)) and projected by a Linear(4C, 2C) without bias.

    The order of the four is torchvision's: x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2],
    x[1::2, 1::2] (rows, columns of the map) -- top-left, bottom-left, top-right,
    bottom-right. An odd H or W is first padded with a zero row (column) at the bottom (right).
    """

    def __init__(self, dim: int, norm_eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=norm_eps)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, W, C)
        """Returns (B, ceil(H/2), ceil(W/2), 2C)."""
        ### BEGIN SOLUTION
        # TODO(swin.patch_merging): pad odd H, W (F.pad pads the last axes first); take the four
        #   strided slices in torchvision's order, concatenate on C, norm, reduction.
        H, W = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2],
                       x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)  # (B, H/2, W/2, 4C)
        return self.reduction(self.norm(x))                            # (B, H/2, W/2, 2C)
        ### END SOLUTION


# ------------------------------------------------------------------------------- swin.model

class PatchEmbed(nn.Module):
    """P x P patches -> C numbers each (a stride-P convolution), LayerNorm; channels-last."""

    def __init__(self, patch_size: int, in_channels: int, dim: int, norm_eps: float = 1e-5):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/P, W/P, C)


class Swin(nn.Module):
    """Patch embedding -> stages of Swin blocks with patch merging between them -> LayerNorm ->
    average over all positions -> head.

    Stage i works at width C_i = embed_dim * 2**i with num_heads[i] heads; its block j shifts
    its windows by 0 when j is even and by window_size // 2 when j is odd. Stochastic depth
    rises linearly over all blocks of all stages, from 0 (first) to config.drop_path (last).
    """

    def __init__(self, config: SwinConfig):
        super().__init__()
        self.config = c = config
        if len(c.depths) != len(c.num_heads):
            raise ValueError(f"depths {c.depths} and num_heads {c.num_heads} differ in length")
        self.patch_embed = PatchEmbed(c.patch_size, c.in_channels, c.embed_dim, c.norm_eps)
        self.stages = nn.ModuleList()  # stage i: nn.Sequential of depths[i] SwinBlocks
        self.merges = nn.ModuleList()  # after stage i (not after the last): PatchMerging(C_i)
        ### BEGIN SOLUTION
        # TODO(swin.model): for each stage i append an nn.Sequential of depths[i] SwinBlocks
        #   (width embed_dim * 2**i, num_heads[i] heads, shift 0 / window_size // 2 alternating,
        #   mlp_ratio, dropout, norm_eps, drop_path = config.drop_path * k / max(1, total - 1)
        #   for the k-th block overall), then, except after the last stage, a PatchMerging
        #   (with norm_eps).
        total, k = sum(c.depths), 0
        for i, (depth, heads) in enumerate(zip(c.depths, c.num_heads)):
            dim = c.embed_dim * 2 ** i
            blocks = []
            for j in range(depth):
                blocks.append(SwinBlock(dim, heads, c.window_size,
                                        0 if j % 2 == 0 else c.window_size // 2, c.mlp_ratio,
                                        c.dropout, c.drop_path * k / max(1, total - 1),
                                        c.norm_eps))
                k += 1
            self.stages.append(nn.Sequential(*blocks))
            if i < len(c.depths) - 1:
                self.merges.append(PatchMerging(dim, c.norm_eps))
        ### END SOLUTION
        self.num_features = c.embed_dim * 2 ** (len(c.depths) - 1)
        self.norm = nn.LayerNorm(self.num_features, eps=c.norm_eps)
        self.head = nn.Linear(self.num_features, c.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """The last stage's normalised map, (B, h, w, C_last)."""
        ### BEGIN SOLUTION
        # TODO(swin.model): patch_embed; each stage, followed by its merge (if any); norm.
        x = self.patch_embed(x)                       # (B, H/P, W/P, C)
        for i, stage in enumerate(self.stages):
            x = stage(x)                              # (B, h, w, C_i)
            if i < len(self.merges):
                x = self.merges[i](x)                 # (B, h/2, w/2, 2 C_i)
        return self.norm(x)                           # (B, h, w, C_last)
        ### END SOLUTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C_in, H, W)
        """Return the logits, (B, num_classes)."""
        ### BEGIN SOLUTION
        # TODO(swin.model): features, mean over the positions (h, w), head.
        return self.head(self.features(x).mean(dim=(1, 2)))  # (B, num_classes)
        ### END SOLUTION


# ------------------------------------------------------------------ torchvision's weights

def torchvision_key_map(depths: tuple[int, ...]) -> dict[str, str]:
    """Our parameter name -> torchvision SwinTransformer's (features.0 the patch embedding,
    features.1, 3, 5, ... the stages, features.2, 4, ... the patch mergings)."""
    names = {"patch_embed.proj.weight": "features.0.0.weight",
             "patch_embed.proj.bias": "features.0.0.bias",
             "patch_embed.norm.weight": "features.0.2.weight",
             "patch_embed.norm.bias": "features.0.2.bias",
             "norm.weight": "norm.weight", "norm.bias": "norm.bias",
             "head.weight": "head.weight", "head.bias": "head.bias"}
    block = {"norm1": "norm1", "attn.qkv": "attn.qkv", "attn.proj": "attn.proj",
             "norm2": "norm2", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.3"}
    for i, depth in enumerate(depths):
        for j in range(depth):
            ours, theirs = f"stages.{i}.{j}.", f"features.{2 * i + 1}.{j}."
            for a, b in block.items():
                for p in ("weight", "bias"):
                    names[f"{ours}{a}.{p}"] = f"{theirs}{b}.{p}"
            names[ours + "attn.relative_position_bias_table"] = (
                theirs + "attn.relative_position_bias_table")
        if i < len(depths) - 1:
            for a in ("norm.weight", "norm.bias", "reduction.weight"):
                names[f"merges.{i}.{a}"] = f"features.{2 * i + 2}.{a}"
    return names


def config_from_torchvision(state: dict[str, torch.Tensor], **overrides) -> SwinConfig:
    """A SwinConfig that fits a torchvision SwinTransformer state dict (e.g. swin_t's)."""
    embed_dim, in_channels, patch, _ = state["features.0.0.weight"].shape
    stages = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")
                     and k.split(".")[1] != "0" and int(k.split(".")[1]) % 2 == 1})
    depths = tuple(len({k.split(".")[2] for k in state if k.startswith(f"features.{s}.")})
                   for s in stages)
    tables = [state[f"features.{s}.0.attn.relative_position_bias_table"] for s in stages]
    window = (int(round(tables[0].shape[0] ** 0.5)) + 1) // 2
    hidden = state["features.1.0.mlp.0.weight"].shape[0]
    config = dict(patch_size=patch, in_channels=in_channels, num_classes=state["head.weight"].shape[0],
                  embed_dim=embed_dim, depths=depths, num_heads=tuple(t.shape[1] for t in tables),
                  window_size=window, mlp_ratio=hidden / embed_dim)
    return SwinConfig(**(config | overrides))


def load_torchvision_weights(model: Swin, state_dict: dict[str, torch.Tensor]) -> Swin:
    """Copy a torchvision SwinTransformer state dict (e.g. swin_t's) into `model`, whose config
    must agree (see config_from_torchvision). torchvision's relative_position_index buffers are
    checked against ours, not copied. Returns `model`."""
    names = torchvision_key_map(model.config.depths)
    missing = [theirs for theirs in names.values() if theirs not in state_dict]
    if missing:
        raise KeyError(f"torchvision state dict lacks {missing[:3]}: is it a SwinTransformer "
                       f"with depths {model.config.depths}?")
    extra = sorted(k for k in set(state_dict) - set(names.values())
                   if not k.endswith("relative_position_index"))
    if extra:
        raise KeyError(f"torchvision state dict has weights this Swin has no place for: {extra[:4]}")
    ours = {name: state_dict[theirs] for name, theirs in names.items()}
    for name, param in model.state_dict().items():
        if ours[name].shape != param.shape:
            raise ValueError(f"{name}: torchvision's tensor has shape {tuple(ours[name].shape)}, "
                             f"this model's has {tuple(param.shape)}; make the configs agree")
    model.load_state_dict(ours)
    index = relative_position_index(model.config.window_size).flatten()
    for key, value in state_dict.items():
        if key.endswith("relative_position_index") and not torch.equal(value.cpu(), index):
            raise ValueError(f"{key} differs from this model's relative_position_index")
    return model
