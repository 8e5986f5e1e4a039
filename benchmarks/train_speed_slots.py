"""Training speed of the Slot Attention lab's reference SlotAttention against lucidrains'
`slot-attention` package (PyPI: slot-attention; in the `dev` extra, `pip install -e .[dev]`), same
sizes, copied weights.

    python benchmarks/train_speed_slots.py [--repeats 5]

One "epoch" = 20 training steps (Adam) of the module alone on random inputs (B 32, N 1024 = a
32 x 32 feature map, D 64, K 7 slots, T 3, MLP 128): forward, a squared-slots loss, backward,
step. Median of --repeats epochs after one warm-up epoch, the two modules taking turns. The
package's q, k, v projections have biases (the paper's have none): they are copied as zeros
and do not change the computation's size in any way that matters (three (D,) adds).
"""
import argparse

import torch

from timing import alternating_medians, cpu_name, steps_seconds
from vislab import SOLUTIONS_DIR
from vislab.impl import import_lab

NAMES = {"slots_log_sigma": "slots_logsigma", "norm_inputs.weight": "norm_input.weight",
         "norm_inputs.bias": "norm_input.bias", "norm_mlp.weight": "norm_pre_ff.weight",
         "norm_mlp.bias": "norm_pre_ff.bias"}


def lucidrains_copy(ours):
    """lucidrains' SlotAttention with the weights of the lab's (zero q, k, v biases)."""
    from slot_attention import SlotAttention

    theirs = SlotAttention(ours.num_slots, ours.dim, iters=ours.iters, eps=ours.eps,
                           hidden_dim=ours.mlp[0].out_features)
    if theirs.mlp[0].out_features != ours.mlp[0].out_features:
        raise ValueError("the package widens the MLP to max(dim, hidden_dim): use mlp_dim >= dim")
    state = {NAMES.get(k, k): v for k, v in ours.state_dict().items()}
    for name in ("to_q", "to_k", "to_v"):
        state[f"{name}.bias"] = torch.zeros(ours.dim)
    theirs.load_state_dict(state)
    return theirs


def epoch(module, inputs, steps=20):
    def loss():
        out = module(inputs)
        return (out[0] if isinstance(out, tuple) else out).pow(2).mean()  # slots
    return steps_seconds(module.parameters(), [loss] * steps, torch.optim.Adam, lr=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = import_lab(SOLUTIONS_DIR / "slots").model
    ours = model.SlotAttention(num_slots=7, dim=64, iters=3, mlp_dim=128)
    theirs = lucidrains_copy(ours)
    inputs = torch.randn(32, 1024, 64)
    torch.manual_seed(1)
    a = ours(inputs)[0]
    torch.manual_seed(1)
    b = theirs(inputs)
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"same initial noise: max |ours - theirs| = {(a - b).abs().max().item():.2e}")
    t_ours, t_theirs = alternating_medians([lambda m=m: epoch(m, inputs) for m in (ours, theirs)],
                                           args.repeats)
    print(f"vislab SlotAttention (solutions/slots)  {t_ours:.3f} s per 20 steps")
    print(f"lucidrains slot_attention.SlotAttention {t_theirs:.3f} s per 20 steps")
    print(f"ratio ours / package: {t_ours / t_theirs:.2f}x (budget 1.2x)")


if __name__ == "__main__":
    main()
