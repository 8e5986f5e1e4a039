"""The checks of diffusion.slot_decoder, registered on the diffusion lab by
autograder/diffusion.py (the "_" keeps the kit from taking this file for a lab). References: a
linear stand-in slot model whose slots and gradients the grader computes in float64, and the
segmentation from the attention written with torch's reshape and nearest interpolation.
"""
import torch
import torch.nn.functional as F

from vislab.grading import expect, expect_close, expect_shape

from . import diffusion_slots_probes as probes


def ref_masks(attention, h, w, size, transpose=False):
    B, K, N = attention.shape
    maps = attention.double().reshape(B, K, h, w) if not transpose else \
        attention.double().reshape(B, K, w, h).transpose(-2, -1)
    return F.interpolate(maps, size=size, mode="nearest").argmax(1)


def register(lab):
    @lab.check("diffusion.slot_decoder", points=1)
    def slot_loss_end_to_end(student, g):
        """slot_diffusion_loss with a stand-in slot model: diffusion_loss gets the model's UNet,
        x0 = 2 images - 1 and the slots of the images as the condition; the loss's gradient
        reaches the slot encoder's parameters (end to end), as the grader computes."""
        B, C, H, W, K, D = 3, 3, 4, 5, 2, 3
        A = torch.randn(C * H * W, K * D, generator=g) / (C * H * W) ** 0.5
        images = torch.rand(B, C, H, W, generator=g)
        t = torch.randint(0, 1000, (B,), generator=g)
        noise = torch.randn(B, C, H, W, generator=g)
        got = student.run(probes.loss, A=A, K=K, D=D, images=images, t=t, noise=noise)
        expect(len(got["calls"]) == 1, f"slot_diffusion_loss called diffusion_loss "
                                       f"{len(got['calls'])} times, expected once")
        call = got["calls"][0]
        expect(call["model"] == "unet", "slot_diffusion_loss must train model.unet (pass it to "
                                        "diffusion_loss), not the whole model")
        x0 = 2 * images.double() - 1
        expect_close(call["x0"], x0, "the x0 given to diffusion_loss", diagnoses={
            "the images not scaled to [-1, 1] (x0 = 2 images - 1)": images.double()})
        Ad = A.double().requires_grad_()
        slots = (images.double().flatten(1) @ Ad).view(B, K, D)
        expect(call["cond"] is not None, "slot_diffusion_loss gave diffusion_loss no condition: "
                                         "the slots are the UNet's condition")
        expect_close(call["cond"], slots.detach(), "the condition given to diffusion_loss (the "
                     "slots of the clean images)", diagnoses={
                         "the slots of x0 = 2 images - 1 (encode the images in [0, 1])":
                             ((2 * images.double() - 1).flatten(1) @ A.double()).view(B, K, D)})
        abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t]
        abar = abar.view(-1, 1, 1, 1)
        a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise.double()
        want = ((a * x_t + slots.flatten(1).mean(1).view(-1, 1, 1, 1) - noise.double()) ** 2).mean()
        want.backward()
        expect_close(got["loss"], want.detach(), "slot_diffusion_loss")
        expect(got.get("A_grad") is not None and bool(got["A_grad"].abs().sum() > 0),
               "no gradient reached the slot encoder: keep the slots in the graph (no .detach(), "
               "no torch.no_grad()); the encoder learns through this loss", "the slots detached")
        expect_close(got["A_grad"], Ad.grad, "gradient of the loss wrt the slot encoder's weights")
        expect_close(got["a_grad"], a.grad, "gradient of the loss wrt the UNet's weights")

    @lab.check("diffusion.slot_decoder", points=1)
    def masks_from_attention(student, g):
        """slot_masks on attention (2, 3, N) of a 3 x 5 feature map (row-major), upsampled to
        6 x 10, and of a 4 x 4 map kept at 4 x 4: the argmax over slots of each position."""
        for (h, w), size in (((3, 5), (6, 10)), ((4, 4), (4, 4))):
            logits = torch.randn(2, 3, h * w, generator=g)
            attention = logits.softmax(1)
            got = student.run(probes.masks, attention=attention, height=h, width=w, size=list(size))
            got = expect_shape(got, (2, *size), f"slot_masks for a {h} x {w} map resized to {size}")
            expect(not got.is_floating_point(), f"slot_masks must return integer ids, got {got.dtype}")
            want = ref_masks(attention, h, w, size)
            wrong = {"the positions read column-major (N is row-major: index = row * width + column)":
                     ref_masks(attention, h, w, size, transpose=True)} if h != w else {}
            expect_close(got, want, f"slot_masks ({h} x {w} -> {size})", atol=0, rtol=0, diagnoses={
                **wrong, "the argmax over positions or channels mixed up": want * 0})
