"""Probes for the diffusion lab's slot decoder task (diffusion.slot_decoder): the student's
slot_diffusion_loss with a stand-in slot model and a recording reference diffusion_loss, and
slot_masks on the grader's attention. Raw material only comes back; the checks are in
autograder/diffusion_slots.py. Nothing here is secret.
"""
import torch
import torch.nn as nn

from vislab.probing import ProbeFailed, replaced, returned


class StandInSlots(nn.Module):
    """encode(images) = slots (B, K, D) = a linear map of the images' pixels (parameter A),
    attention uniform; unet(x, t, cond) = a * x + the mean of cond per image."""

    def __init__(self, A, K, D):
        super().__init__()
        self.A = nn.Parameter(A.clone())
        self.K, self.D = K, D
        self.unet = StandInUNet()

    def encode(self, images):
        if type(images) is not torch.Tensor:
            raise ProbeFailed("model.encode must get the images tensor")
        slots = (images.flatten(1) @ self.A).view(len(images), self.K, self.D)
        N = images.shape[-2] * images.shape[-1]
        return slots, torch.full((len(images), self.K, N), 1.0 / self.K)


class StandInUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.5))

    def forward(self, x, t, cond=None):
        extra = 0 if cond is None else cond.flatten(1).mean(1).view(-1, *([1] * (x.ndim - 1)))
        return self.a * x + extra


def loss(lab, A, K, D, images, t, noise):
    model = StandInSlots(A, K, D)
    seen = []

    def recording_loss(unet, schedule, x0, cond=None):
        seen.append({"is_unet": unet is model.unet, "x0": x0.detach().clone(),
                     "cond": None if cond is None else cond.detach().clone()})
        abar = schedule["alphas_cumprod"].to(x0.dtype)[t].view(-1, *([1] * (x0.ndim - 1)))
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        return ((unet(x_t, t, cond) - noise) ** 2).mean()

    from_grader = {"alphas_cumprod": torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000,
                                                                     dtype=torch.float64), 0)}
    with replaced(lab.slot_decoder, diffusion_loss=recording_loss):
        value = returned(lab.slot_decoder.slot_diffusion_loss(model, from_grader, images.clone()),
                         "slot_diffusion_loss")
    out = {"loss": value.detach(), "calls": [{"x0": s["x0"], "cond": s["cond"],
                                             "model": "unet" if s["is_unet"] else "other"}
                                            for s in seen]}
    if value.requires_grad and value.numel() == 1:
        value.backward()
        out["A_grad"] = model.A.grad
        out["a_grad"] = model.unet.a.grad
    return out


def masks(lab, attention, height, width, size):
    return returned(lab.slot_decoder.slot_masks(attention.clone(), height, width, tuple(size)),
                    "slot_masks")
