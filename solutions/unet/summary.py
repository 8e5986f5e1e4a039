"""Model graphs: a layer table (name, type, output shape, parameters) and a drawn U.

    rows = layer_table(model, (1, 3, 64, 64))   # one forward pass with hooks
    print(format_table(rows))
    draw_graph(model, (1, 3, 64, 64), "graph.png", "UNet")

The table lists every module down to `max_depth` levels of names, in the order the forward pass
calls them. The drawing places each block (inc, downs.i, ups.i, head; the encoder's stages and
merges in a hybrid UNet) at its resolution, so that the encoder goes down, the decoder comes up
and dashed arrows show the skips: the U of the UNet's name.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn


def layer_table(model: nn.Module, input_shape: tuple[int, ...], max_depth: int = 3) -> list[dict]:
    """One row per module called in model(torch.zeros(input_shape)), at most max_depth names
    deep, in the order they are called: {name, type, shape (of the output; the last map for a
    list), params (its own and its children's), depth (1 + how many of its parents are rows)}.
    The model runs once in eval mode without gradients; its mode is restored afterwards."""
    rows, hooks = {}, []

    def before(name, module):
        def record(*_):
            rows.setdefault(name, {"name": name, "type": type(module).__name__, "shape": None,
                                   "params": sum(p.numel() for p in module.parameters())})
        return record

    def after(name):
        def record(_, __, output):
            out = output[-1] if isinstance(output, (list, tuple)) else output
            if rows[name]["shape"] is None and isinstance(out, torch.Tensor):
                rows[name]["shape"] = tuple(out.shape)
        return record

    for name, module in model.named_modules():
        if name and name.count(".") < max_depth and not isinstance(module, nn.ModuleList):
            hooks.append(module.register_forward_pre_hook(before(name, module)))
            hooks.append(module.register_forward_hook(after(name)))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for r in rows.values():
        parts = r["name"].split(".")
        r["depth"] = 1 + sum(".".join(parts[:k]) in rows for k in range(1, len(parts)))
    return list(rows.values())


def format_table(rows: list[dict]) -> str:
    """The rows as aligned text, children indented under their parent."""
    lines = [f"{'layer':<40} {'type':<22} {'output shape':<22} {'params':>9}"]
    for r in rows:
        name = "  " * (r["depth"] - 1) + r["name"]
        shape = "x".join(str(s) for s in r["shape"]) if r["shape"] else "-"
        lines.append(f"{name:<40} {r['type']:<22} {shape:<22} {r['params']:>9,}")
    total = sum(r["params"] for r in rows if r["depth"] == 1)
    lines.append(f"{'total':<40} {'':<22} {'':<22} {total:>9,}")
    return "\n".join(lines)


def blocks(model: nn.Module, prefix: str = "") -> list[str]:
    """The names the drawing shows: children of the model and of its ModuleLists, with a child
    that holds ModuleLists itself (a hybrid UNet's encoder) opened up in the same way."""
    names = []
    for name, child in model.named_children():
        full = prefix + name
        if isinstance(child, nn.ModuleList) or any(isinstance(c, nn.ModuleList)
                                                   for c in child.children()):
            names += blocks(child, full + ".")
        else:
            names.append(full)
    return names


def draw_graph(model: nn.Module, input_shape: tuple[int, ...], path: Path, title: str = "") -> Path:
    """A PNG of the model's blocks, each at its resolution (height = log2 of the downsampling),
    in the order they run, with arrows between consecutive blocks and dashed skip arrows from
    each encoder block to the decoder block that consumes its resolution."""
    from vislab import plots

    plt = plots.plt
    shown = set(blocks(model))
    rows = [r for r in layer_table(model, input_shape, max_depth=3) if r["name"] in shown]
    channels_last = getattr(getattr(model, "config", None), "encoder", None) == "swin"
    H = input_shape[-2]

    def level(r):
        s = r["shape"]
        h = s[1] if channels_last and r["name"].startswith("encoder.") else s[2]
        return round(math.log2(H / h))

    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 1, 4.2))
    points = []
    for x, r in enumerate(rows):
        y = -level(r)
        points.append((x, y))
        shape = "x".join(str(v) for v in r["shape"][1:])
        ax.text(x, y, f"{r['name']}\n{r['type']}\n{shape}\n{r['params']:,} p", ha="center",
                va="center", fontsize=6.5, bbox=dict(boxstyle="round", fc="#dbe9f6", ec="#4a6fa5"))
    # the main path; a hybrid UNet's `stem` is a side branch (only its skip arrow is drawn)
    path_points = [p for p, r in zip(points, rows) if r["name"] != "stem"]
    for (x0, y0), (x1, y1) in zip(path_points, path_points[1:]):
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", color="#444", lw=0.8,
                                                            shrinkA=22, shrinkB=22))
    # skips: an up block at level l takes the last block before it at level l that is not
    # itself part of the decoder
    for i in range(len(rows)):
        if rows[i]["name"].startswith("ups."):
            y = points[i][1]
            sources = [j for j in range(i) if points[j][1] == y
                       and not rows[j]["name"].startswith(("ups.", "head"))]
            if sources:
                ax.annotate("", (points[i][0] - 0.3, y + 0.15), (points[sources[-1]][0] + 0.3, y + 0.15),
                            arrowprops=dict(arrowstyle="->", color="#c0504d", ls="--", lw=0.8))
    ax.set_xlim(-0.8, len(rows) - 0.2)
    ax.set_ylim(min(p[1] for p in points) - 0.8, 0.8)
    ax.axis("off")
    ax.set_title(title + (" -- " if title else "") + "blocks at their resolution, skips dashed",
                 fontsize=9)
    return plots._save(fig, path)
