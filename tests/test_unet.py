"""The UNet lab's checks: plausible mistakes lose points in the named task with a message that
helps, and correct code written differently gets full marks. Plus the lab's kit code: the
trimap option of the pets loader, the layer table, the given encoders."""
import pytest
import torch

from conftest import by_task, grade_task
from vislab import SOLUTIONS_DIR
from vislab.grading import Lab, grade, load_lab, summarize

TRAINING = "trains_on_pets_synthetic"


def grade_quick(folder, task: str) -> dict:
    """The task's row without the training check (seconds per case): a mistake must already
    lose points in the task's other checks."""
    checks = load_lab("unet")
    quick = Lab(checks.name, checks.tasks, [c for c in checks.checks if c.name != TRAINING])
    rows = summarize(quick, grade(quick, folder, task))
    assert len(rows) == 1
    return rows[0]


PAD = "        x = F.pad(x, (0, W - x.shape[-1], 0, H - x.shape[-2]))              # (B, C/2, H, W)\n"
BILINEAR = 'x = self.up(F.interpolate(x, scale_factor=2, mode="bilinear"))'
DICE = "    dice = (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)\n"

MISTAKES = {
    # name: (task, file, [(old, new), ...], words the message must contain)
    "ReLU before BatchNorm": ("unet.double_conv", "unet.py", [
        ("x = F.relu(self.bn1(self.conv1(x)))", "x = self.bn1(F.relu(self.conv1(x)))"),
        ("return F.relu(self.bn2(self.conv2(x)))", "return self.bn2(F.relu(self.conv2(x)))")],
        "ReLU before BatchNorm"),
    "batch statistics in eval mode": ("unet.double_conv", "unet.py", [
        ("x = F.relu(self.bn1(self.conv1(x)))",
         "x = F.relu(F.batch_norm(self.conv1(x), None, None, self.bn1.weight, self.bn1.bias, True))"),
        ("return F.relu(self.bn2(self.conv2(x)))",
         "return F.relu(F.batch_norm(self.conv2(x), None, None, self.bn2.weight, self.bn2.bias, True))")],
        "batch's statistics in eval mode"),
    "no ReLU after the second BatchNorm": ("unet.double_conv", "unet.py", [
        ("return F.relu(self.bn2(self.conv2(x)))", "return self.bn2(self.conv2(x))")],
        "no ReLU after the second"),
    "max-pool where a strided conv was asked": ("unet.down", "unet.py", [
        ("\n            self.pool = nn.Conv2d(in_channels, in_channels, kernel_size=2, stride=2)",
         "\n            self.pool = nn.MaxPool2d(2)")], "max-pool where a strided convolution was asked"),
    "strided conv created, max-pool used": ("unet.down", "unet.py", [
        ("return self.conv(self.pool(x))", "return self.conv(F.max_pool2d(x, 2))")],
        "max-pooling where the strided convolution"),
    "average pooling": ("unet.down", "unet.py", [
        ("self.pool = nn.MaxPool2d(2)", "self.pool = nn.AvgPool2d(2)")], "average pooling"),
    "strided conv that changes the channels": ("unet.down", "unet.py", [
        ("\n            self.pool = nn.Conv2d(in_channels, in_channels, kernel_size=2, stride=2)",
         "\n            self.pool = nn.Conv2d(in_channels, out_channels, kernel_size=2, stride=2)")],
        "it keeps the channels"),
    "skip concatenated in the wrong order": ("unet.up", "unet.py", [
        ("self.conv(torch.cat([skip, x], dim=1))", "self.conv(torch.cat([x, skip], dim=1))")],
        "wrong order"),
    "missing skip (upsampled map twice)": ("unet.up", "unet.py", [
        ("self.conv(torch.cat([skip, x], dim=1))", "self.conv(torch.cat([x, x], dim=1))")],
        "the skip is missing"),
    "missing skip (no concatenation)": ("unet.up", "unet.py", [
        ("return self.conv(torch.cat([skip, x], dim=1))", "return self.conv(x)")],
        "was the skip concatenated"),
    "upsample without halving the channels": ("unet.up", "unet.py", [
        ("\n            self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2)",
         "\n            self.up = nn.ConvTranspose2d(in_channels, in_channels, 2, stride=2)")],
        "must halve the channels"),
    "skip cropped instead of padding the upsampled map": ("unet.up", "unet.py", [
        (PAD, "        skip = skip[..., :x.shape[-2], :x.shape[-1]]\n")], "do not crop the skip"),
    "padding at the top and left": ("unet.up", "unet.py", [
        (PAD, "        x = F.pad(x, (W - x.shape[-1], 0, H - x.shape[-2], 0))\n")], "top and left"),
    "bilinear with align_corners=True": ("unet.up", "unet.py", [
        (BILINEAR, 'x = self.up(F.interpolate(x, scale_factor=2, mode="bilinear", '
                   'align_corners=True))')], "align_corners=True"),
    "nearest instead of bilinear": ("unet.up", "unet.py", [
        (BILINEAR, "x = self.up(F.interpolate(x, scale_factor=2))")], "nearest-neighbour"),
    "interpolating to the skip's size": ("unet.up", "unet.py", [
        (BILINEAR, 'x = self.up(F.interpolate(x, size=skip.shape[-2:], mode="bilinear"))')],
        "by interpolation instead"),
    "skips taken from the wrong level": ("unet.model", "unet.py", [
        ("x = up(x, skips.pop())", "x = up(x, skips.pop(0))")], "skips in reverse order"),
    "sigmoid on the model's output": ("unet.model", "unet.py", [
        ("return self.head(x)                                   # (B, num_classes, H, W)",
         "return torch.sigmoid(self.head(x))")], "sigmoid applied to the output"),
    "ReLU on the logits": ("unet.model", "unet.py", [
        ("return self.head(x)                                   # (B, num_classes, H, W)",
         "return F.relu(self.head(x))")], "ReLU on the logits"),
    "Dice on the logits": ("unet.dice_loss", "losses.py", [
        ("p = torch.sigmoid(logits).flatten(1)", "p = logits.flatten(1)")], "Dice of the logits"),
    "Dice per batch instead of per image": ("unet.dice_loss", "losses.py", [
        (DICE, "    dice = (2 * inter.sum() + eps) / (p.sum() + t.sum() + eps)\n")], "per-batch"),
    "eps outside the ratio": ("unet.dice_loss", "losses.py", [
        (DICE, "    dice = 2 * inter / (p.sum(1) + t.sum(1)) + eps\n")], "inside the ratio"),
    "eps in the denominator only": ("unet.dice_loss", "losses.py", [
        (DICE, "    dice = 2 * inter / (p.sum(1) + t.sum(1) + eps)\n")], "denominator only"),
    "squared denominator": ("unet.dice_loss", "losses.py", [
        (DICE, "    dice = (2 * inter + eps) / ((p * p).sum(1) + (t * t).sum(1) + eps)\n")],
        "squared terms"),
    "Dice instead of 1 - Dice": ("unet.dice_loss", "losses.py", [
        ("    return 1 - dice.mean()\n    ### END SOLUTION\n\n\ndef multiclass",
         "    return dice.mean()\n    ### END SOLUTION\n\n\ndef multiclass")], "the loss is 1 - Dice"),
    "sigmoid applied twice (sigmoid + BCEWithLogits)": ("unet.dice_loss", "losses.py", [
        ("F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))",
         "F.binary_cross_entropy_with_logits(torch.sigmoid(logits), target.to(logits.dtype))")],
        "the sigmoid twice"),
    "multi-class softmax over the batch": ("unet.dice_loss", "losses.py", [
        ("p = logits.softmax(dim=1).flatten(2)", "p = logits.softmax(dim=0).flatten(2)")],
        "softmax over the batch"),
    "Swin features left channels-last": ("unet.swin_encoder", "hybrid.py", [
        ("features.append(x.permute(0, 3, 1, 2))", "features.append(x)")], "channels-last"),
    "Swin features reshaped instead of permuted": ("unet.swin_encoder", "hybrid.py", [
        ("features.append(x.permute(0, 3, 1, 2))",
         "features.append(x.reshape(x.shape[0], x.shape[3], x.shape[1], x.shape[2]))")],
        "reshaped to (B, C, H, W) instead of permuted"),
    "Swin features after the merge": ("unet.swin_encoder", "hybrid.py", [
        ("            features.append(x.permute(0, 3, 1, 2))       # (B, C_i, h, w)\n"
         "            if i < len(self.merges):\n"
         "                x = self.merges[i](x)                    # (B, h/2, w/2, 2 C_i)\n",
         "            if i < len(self.merges):\n"
         "                x = self.merges[i](x)\n"
         "            features.append(x.permute(0, 3, 1, 2))\n")], "after the patch merging"),
    "ConvNeXt features after the downsampling": ("unet.convnext_encoder", "hybrid.py", [
        ("            features.append(x)\n"
         "            if i < len(self.downsamples):\n"
         "                x = self.downsamples[i](x)               # (B, C_i+1, h/2, w/2)\n",
         "            if i < len(self.downsamples):\n"
         "                x = self.downsamples[i](x)\n"
         "            features.append(x)\n")], "after the downsampling"),
}


@pytest.mark.parametrize("name", by_task(MISTAKES))
def test_mistake_loses_points_with_a_helpful_message(name, make_variant):
    task, file, edits, words = MISTAKES[name]
    row = grade_quick(make_variant("unet", {file: edits}), task)
    assert row["status"] == "failed", row
    assert row["earned"] < row["possible"]
    assert words in row["message"], row["message"]


# ------------------------------------------------------------ correct, written differently

ALTERNATIVES = {
    "DoubleConv with torch.relu and named steps": ("unet.double_conv", "unet.py", [(
        """        x = F.relu(self.bn1(self.conv1(x)))     # (B, C_out, H, W)
        return F.relu(self.bn2(self.conv2(x)))  # (B, C_out, H, W)""",
        """        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
            x = torch.relu(bn(conv(x)))
        return x""")]),
    "Down with F.max_pool2d in forward": ("unet.down", "unet.py", [(
        "return self.conv(self.pool(x))  # (B, C_out, H/2, W/2)",
        "return self.conv(F.max_pool2d(x, 2) if self.mode == 'maxpool' else self.pool(x))")]),
    "bilinear with nn.Upsample": ("unet.up", "unet.py", [(
        BILINEAR, 'x = self.up(nn.Upsample(scale_factor=2, mode="bilinear")(x))')]),
    "1x1 conv before the bilinear upsampling (they commute)": ("unet.up", "unet.py", [(
        BILINEAR, 'x = F.interpolate(self.up(x), scale_factor=2, mode="bilinear", '
                  'align_corners=False)')]),
    "centred padding, as the common PyTorch UNet": ("unet.up", "unet.py", [(
        PAD, "        dy, dx = H - x.shape[-2], W - x.shape[-1]\n"
             "        x = F.pad(x, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])\n")]),
    "pad by one, then crop to the skip's size": ("unet.up", "unet.py", [(
        PAD, "        x = F.pad(x, (0, 1, 0, 1))[..., :H, :W]\n")]),
    "zeros canvas with the upsampled map copied in": ("unet.up", "unet.py", [(
        PAD, "        canvas = x.new_zeros(x.shape[0], x.shape[1], H, W)\n"
             "        canvas[..., :x.shape[-2], :x.shape[-1]] = x\n        x = canvas\n")]),
    "UNet with zip over reversed skips": ("unet.model", "unet.py", [(
        """        skips = [self.inc(x)]                                 # [(B, base, H, W)]
        for down in self.downs:
            skips.append(down(skips[-1]))                     # (B, base 2^(i+1), H/2^(i+1), ..)
        x = skips.pop()                                       # the bottleneck
        for up in self.ups:
            x = up(x, skips.pop())                            # (B, C/2, 2h, 2w)""",
        """        x = self.inc(x)
        skips = []
        for down in self.downs:
            skips.append(x)
            x = down(x)
        for up, skip in zip(self.ups, reversed(skips)):
            x = up(x, skip)""")]),
    "Dice with einsum": ("unet.dice_loss", "losses.py", [(
        "    inter = (p * t).sum(1)                       # (B,)\n",
        "    inter = torch.einsum('bn,bn->b', p, t)\n")]),
    "Dice with sums over the image axes": ("unet.dice_loss", "losses.py", [(
        """    p = torch.sigmoid(logits).flatten(1)         # (B, H*W)
    t = target.flatten(1).to(p.dtype)            # (B, H*W)
    inter = (p * t).sum(1)                       # (B,)
    dice = (2 * inter + eps) / (p.sum(1) + t.sum(1) + eps)""",
        """    p = logits.sigmoid()
    dims = tuple(range(1, p.ndim))
    inter = (p * target).sum(dims)
    dice = (2 * inter + eps) / (p.sum(dims) + target.sum(dims) + eps)""")]),
    "BCE with nn.BCEWithLogitsLoss": ("unet.dice_loss", "losses.py", [(
        "return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))",
        "return torch.nn.BCEWithLogitsLoss()(logits, target.float())")]),
    "Swin features with movedim": ("unet.swin_encoder", "hybrid.py", [(
        "features.append(x.permute(0, 3, 1, 2))", "features.append(x.movedim(-1, 1))")]),
}


@pytest.mark.parametrize("name", by_task(ALTERNATIVES))
def test_correct_alternative_gets_full_marks(name, make_variant):
    task, file, edits = ALTERNATIVES[name]
    folder = make_variant("unet", {file: edits})
    row = grade_task("unet", folder, task) if name == "UNet with zip over reversed skips" \
        else grade_quick(folder, task)
    assert row["status"] == "passed", row
    assert row["earned"] == row["possible"]


# ------------------------------------------------------------------------ the kit's code

def lab_code():
    from vislab.impl import import_lab
    return import_lab(SOLUTIONS_DIR / "unet")


def test_pets_trimap_option_gives_three_classes_matching_the_binary_mask():
    from vislab.data import pets_synthetic
    from vislab.data.pets import TRIMAP_CLASSES

    binary, trimap = pets_synthetic("test", 32), pets_synthetic("test", 32, trimap=True)
    assert TRIMAP_CLASSES == ("background", "pet", "border")
    for i in (0, 7):
        (x1, mask), (x2, classes) = binary[i], trimap[i]
        assert torch.equal(x1, x2)
        assert classes.shape == (32, 32) and classes.dtype == torch.int64
        assert set(classes.unique().tolist()) <= {0, 1, 2} and (classes == 2).any()
        assert torch.equal(mask[0] > 0, classes > 0)  # pet and border are the binary "pet"


def test_unet_keeps_odd_sizes_and_variants_differ():
    unet = lab_code().unet
    torch.manual_seed(0)
    x = torch.randn(1, 3, 37, 29)
    params = {}
    for down in unet.DOWNS:
        for up in unet.UPS:
            model = unet.UNet(unet.UNetConfig(down=down, up=up, num_classes=3)).eval()
            assert model(x).shape == (1, 3, 37, 29)
            params[down, up] = sum(p.numel() for p in model.parameters())
    assert len(set(params.values())) == 4  # each choice changes the parameters


def test_layer_table_lists_blocks_with_shapes_and_parameters(tmp_path):
    lab = lab_code()
    model = lab.unet.UNet(lab.unet.UNetConfig(base=4, depth=2))
    rows = lab.summary.layer_table(model, (1, 3, 32, 32))
    by_name = {r["name"]: r for r in rows}
    assert by_name["inc"]["shape"] == (1, 4, 32, 32)
    assert by_name["downs.1"]["shape"] == (1, 16, 8, 8)
    assert by_name["ups.1"]["shape"] == (1, 4, 32, 32)
    assert by_name["head"]["shape"] == (1, 1, 32, 32)
    assert sum(r["params"] for r in rows if r["depth"] == 1) == sum(
        p.numel() for p in model.parameters())
    text = lab.summary.format_table(rows)
    assert "downs.0.pool" not in text or "MaxPool2d" in text
    path = lab.summary.draw_graph(model, (1, 3, 32, 32), tmp_path / "graph.png", "UNet")
    assert path.stat().st_size > 1000
    swin = lab.hybrid.HybridUNet(lab.hybrid.HybridConfig(embed_dim=8, depths=(1, 1),
                                                         num_heads=(1, 2)))
    names = {r["name"]: r for r in lab.summary.layer_table(swin, (1, 3, 32, 32))}
    assert names["encoder.stages.0"]["shape"] == (1, 16, 16, 8)  # channels-last inside Swin
    assert names["head"]["shape"] == (1, 1, 32, 32)


def test_hybrid_unet_refuses_sizes_it_cannot_halve():
    hybrid = lab_code().hybrid
    model = hybrid.HybridUNet(hybrid.HybridConfig(encoder="convnext", embed_dim=8))
    assert model(torch.randn(1, 3, 24, 16)).shape == (1, 1, 24, 16)
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.randn(1, 3, 20, 16))


def test_train_options_pick_the_runs_and_refuse_what_does_not_fit():
    import argparse

    from vislab.errors import UsageError

    train = lab_code().train
    parser = argparse.ArgumentParser()
    parser.add_argument("--full", action="store_true")
    train.add_arguments(parser)
    specs = lambda *argv: train.run_specs(parser.parse_args(list(argv)))  # noqa: E731
    assert [s["name"] for s in specs()] == ["maxpool-transpose-bce", "maxpool-transpose-dice",
                                            "conv-transpose-bce", "conv-bilinear-dice"]
    assert [s["name"] for s in specs("--up", "bilinear")] == ["maxpool-bilinear-bce"]
    assert [s["loss"] for s in specs("--trimap")] == ["ce", "dice", "ce", "dice"]
    assert specs("--trimap")[0]["config"]["num_classes"] == 3
    assert specs("--model", "swin-unet", "--blocks", "1")[0]["config"]["depths"] == (1, 1, 1)
    assert specs("--base", "8", "--depth", "2")[0]["config"]["base"] == 8
    needs = lambda *argv: train.required_tasks(parser.parse_args(list(argv)))  # noqa: E731
    assert needs() == {"unet.double_conv", "unet.down", "unet.up", "unet.model", "unet.dice_loss"}
    assert needs("--model", "swin-unet") == {"unet.double_conv", "unet.up", "unet.dice_loss",
                                             "unet.swin_encoder"}
    assert "unet.convnext_encoder" in needs("--model", "convnext-unet")
    for argv, words in ((["--loss", "ce"], "add --trimap"), (["--trimap", "--loss", "bce"], "binary"),
                        (["--model", "convnext-unet", "--down", "conv"], "drop --down")):
        with pytest.raises(UsageError, match=words):
            specs(*argv)
