"""How close the lab's BatchNorm (solutions/swin_cnn/norms.py) stays to the exact result as a
channel's mean grows next to its spread, against torch's nn.BatchNorm2d.

    python benchmarks/batchnorm_precision.py

The reference takes the variance as E[x^2] - mean^2 (fast, see its comment), which cancels
when |mean| >> std; torch's kernel centres first. Input: a (64, 16, 28, 28) float32 batch,
standard deviation 1, every channel's mean `offset`; the exact answer is computed in float64.
Printed: the largest absolute error of the training output and of the input's gradient.
"""
import torch
import torch.nn as nn

from vislab import SOLUTIONS_DIR
from vislab.impl import import_lab


def errors(make_norm, x: torch.Tensor, grad_out: torch.Tensor) -> tuple[float, float]:
    exact = nn.BatchNorm2d(x.shape[1]).double()
    x64 = x.double().requires_grad_()
    want = exact(x64)
    want_grad, = torch.autograd.grad(want, x64, grad_out.double())
    x32 = x.clone().requires_grad_()
    got = make_norm(x.shape[1])(x32)
    got_grad, = torch.autograd.grad(got, x32, grad_out)
    return ((got.double() - want).abs().max().item(),
            (got_grad.double() - want_grad).abs().max().item())


def main() -> None:
    lab = import_lab(SOLUTIONS_DIR / "swin_cnn")
    g = torch.Generator().manual_seed(0)
    print(f"{'mean / std':>10} {'lab output':>11} {'lab grad':>9} {'torch output':>13} {'torch grad':>11}")
    for offset in (0, 1, 10, 100, 1000):
        x = torch.randn(64, 16, 28, 28, generator=g) + offset
        grad_out = torch.randn(x.shape, generator=g)
        lab_out, lab_grad = errors(lab.norms.BatchNorm, x, grad_out)
        torch_out, torch_grad = errors(nn.BatchNorm2d, x, grad_out)
        print(f"{offset:>10} {lab_out:>11.1e} {lab_grad:>9.1e} {torch_out:>13.1e} {torch_grad:>11.1e}")


if __name__ == "__main__":
    main()
