"""The segmentation tries of docs/labs/diffusion.md (the slot decoder's results): 6 epochs of
the slot-conditioned latent decoder on the default Tetrominoes scenes with one setting changed,
the validation foreground ARI per epoch. Needs the kit's scene autoencoder (run
`vislab train diffusion --impl solutions --part slots` once). The initialisation is NOT seeded
(as measured for the docs): each run is also a different random start.

    python benchmarks/diffusion_slots_segmentation.py {base6,slotlr0.3,slotlr3,iters5,lowattn,bs16,clip1} [SEED]
    python benchmarks/diffusion_slots_segmentation.py {warm,warmfrozen} SEED CHECKPOINT

warm: the slot encoder and slot attention start from a Slot Attention lab run's CHECKPOINT
(`vislab train slots --impl solutions`), trained on end to end; warmfrozen: the same, kept frozen
(only the UNet learns), to see whether object slots help the decoder.

clip1: the gradients' global norm clipped to 1 (a common setting for slot models), through a
global optimizer step pre-hook (vislab.training.fit has no clipping option). SEED, when given,
seeds the initialisation (torch.manual_seed) before the model is built.
"""
import sys, json, torch
from dataclasses import replace
from pathlib import Path
from torch.utils.data import TensorDataset
from vislab.impl import import_lab
from vislab import SOLUTIONS_DIR
from vislab.training import RunConfig, fit, Dist
lab = import_lab(SOLUTIONS_DIR / "diffusion")
st = lab.slots_train
name = sys.argv[1]
if len(sys.argv) > 2:
    torch.manual_seed(int(sys.argv[2]))
ae = st.load_scene_autoencoder(Path("runs/diffusion/scene-ae-tetrominoes-16px-seed0/checkpoint.pt")).requires_grad_(False)
x_train, _ = st.scenes("tetrominoes", "train", 2000)
x_val, id_val = st.scenes("tetrominoes", "val", 200)
scale = lab.scene_autoencoder.latent_scale(ae, x_train)
_, sc, uc = st.configs(False)
slot_lr = 1e-3
if name == "iters5": sc = replace(sc, iters=5)
if name == "lowattn": uc = replace(uc, attention=(False, True))
model = lab.slot_decoder.SlotDiffusion(sc, uc)
params = None
if name.startswith("warm"):
    st.load_slot_encoder(model, Path(sys.argv[3]))
    if name == "warmfrozen":
        model.encoder.requires_grad_(False)
        model.slot_attention.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
if name == "clip1":
    def clip(optimizer, args, kwargs):
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    from torch.optim.optimizer import register_optimizer_step_pre_hook
    register_optimizer_step_pre_hook(clip)
if name.startswith("slotlr"):
    f = float(name[6:])
    slot = list(model.encoder.parameters()) + list(model.slot_attention.parameters())
    params = [{"params": slot, "lr": 1e-3 * f}, {"params": list(model.unet.parameters())}]
schedule = lab.ddpm.make_schedule(1000)
step = lambda m, b: {"loss": lab.slot_decoder.slot_diffusion_loss(m, schedule, b[0], ae, scale)}
ev = lambda m: st.segmentation(m, x_val, id_val)
import tempfile
out = Path(tempfile.mkdtemp()) / name
h = fit(model, TensorDataset(x_train), step, RunConfig(out, 6, 16 if name == "bs16" else 32, 1e-3, weight_decay=0.0), Dist(torch.device("cpu")), evaluate=ev, params=params)
print(name, json.dumps([(r["epoch"], round(r["train_loss"], 4), round(r["val_fg_ari"], 3), round(r["val_ari"], 3)) for r in h]))
