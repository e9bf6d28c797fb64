"""PyTorch baseline for `perturb bench` (run by it; not meant to be run by hand).

Reads a JSON file {"warmup": W, "reps": R, "device": D, "threads": T, "cases": [...]} and
prints a JSON list with one entry per case, in order: {"case", "median_ms", "min_ms", "max_ms",
"version"}. On CUDA, timing is CUDA events around each repetition after W warm-up calls, TF32
is off (FP32 like the kernels it is compared with) and cuDNN picks its fastest algorithm
(benchmark mode). On the CPU, PyTorch runs oneDNN/MKL on T threads.

Cases:
  {"kind": "conv2d", "dir": "conv2d_fwd" | "conv2d_bwd_input" | "conv2d_bwd_weight" |
   "conv2d_layer", "x": [n, c, h, w], "w": [co, c, kh, kw], "stride": s, "pad": p}
  {"kind": "linear", "dir": "linear_fwd" | "linear_bwd_input" | "linear_bwd_weight",
   "m": m, "k": k, "n": n}
  {"kind": "train_step", "batch": b}: conv(1->32,3)-relu-conv(32->64,3)-relu-maxpool2-
   fc(9216->128)-relu-fc(128->10), cross-entropy, backward, SGD momentum 0.9.
  {"kind": "adv_train", "model": "cnn-small" | "cnn-madry" | "mlp", "batch": b,
   "eps": e, "alpha": a, "steps": k}: one adversarial-training step of a demo model, the
   adversary a uniform start in the eps-box and k projected sign steps of size a (k = 1,
   a = 1.25 eps is FGSM-RS; k = 10 PGD-10); "adv_train_pgd10" is the same kind.
  {"kind": "attack", "model": ..., "batch": b, "eps": e, "alpha": a, "steps": k,
   "random_start": bool}: the attack alone (FGSM: k = 1, a = eps, no random start; PGD-10),
   ending, like perturb's, with the prediction on the adversarial batch.

The input also names "device" ("cuda" or "cpu") and, for the CPU, "threads"
(torch.set_num_threads). On the CPU the timing is a wall clock (time.perf_counter) around each
repetition, since the work is synchronous there.
"""
import json
import statistics
import sys
import time

import torch

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.backends.cudnn.benchmark = True
DEV = torch.device("cuda")


def timed(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    if DEV.type == "cpu":
        ms = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t) * 1e3)
        return statistics.median(ms), min(ms), max(ms)
    torch.cuda.synchronize()
    pairs = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        pairs.append((s, e))
    torch.cuda.synchronize()
    ms = [s.elapsed_time(e) for s, e in pairs]
    return statistics.median(ms), min(ms), max(ms)


def conv_case(c):
    x = torch.randn(*c["x"], device=DEV)
    w = torch.randn(*c["w"], device=DEV)
    s, p = c["stride"], c["pad"]
    y = torch.nn.functional.conv2d(x, w, stride=s, padding=p)
    dy = torch.randn_like(y)
    aten = torch.ops.aten.convolution_backward

    def bwd(mask):
        return aten(dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask)

    fwd = lambda: torch.nn.functional.conv2d(x, w, stride=s, padding=p)
    ops = {
        "conv2d_fwd": fwd,
        "conv2d_bwd_input": lambda: bwd([True, False, False]),
        "conv2d_bwd_weight": lambda: bwd([False, True, False]),
        "conv2d_layer": lambda: (fwd(), bwd([True, True, False])),
    }
    return ops[c["dir"]]


def linear_case(c):
    m, k, n = c["m"], c["k"], c["n"]
    x = torch.randn(m, k, device=DEV)
    w = torch.randn(n, k, device=DEV)
    dy = torch.randn(m, n, device=DEV)
    ops = {
        "linear_fwd": lambda: x @ w.t(),
        "linear_bwd_input": lambda: dy @ w,
        "linear_bwd_weight": lambda: dy.t() @ x,
    }
    return ops[c["dir"]]


def train_case(c):
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(DEV)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(c["batch"], 1, 28, 28, device=DEV)
    y = torch.randint(0, 10, (c["batch"],), device=DEV)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return step


def demo_model(name):
    nn = torch.nn
    if name == "cnn-small":
        layers = [nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                  nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10)]
    elif name == "cnn-madry":
        layers = [nn.Conv2d(1, 32, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5, 1, 2), nn.ReLU(),
                  nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10)]
    else:
        layers = [nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
    return nn.Sequential(*layers).to(DEV)


def sign_steps(model, x, y, eps, alpha, steps, random_start):
    """k projected sign steps of size alpha in the eps-box around x (d loss / d input only, as
    torch.autograd.grad computes), from a uniform start when random_start."""
    F = torch.nn.functional
    xa = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1) if random_start else x
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def adv_train_case(c):
    """Adversarial training step in eager mode: the adversary (sign_steps from a uniform start),
    then an SGD step on the adversarial batch."""
    F = torch.nn.functional
    model = demo_model(c["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(c["batch"], 1, 28, 28, device=DEV)
    y = torch.randint(0, 10, (c["batch"],), device=DEV)
    eps, alpha, steps = c["eps"], c["alpha"], c["steps"]

    def step():
        xa = sign_steps(model, x, y, eps, alpha, steps, True)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(xa), y).backward()
        opt.step()

    return step


def attack_case(c):
    """The attack alone on a fixed model, ending with the prediction on the adversarial batch."""
    model = demo_model(c["model"])
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(c["batch"], 1, 28, 28, device=DEV)
    y = torch.randint(0, 10, (c["batch"],), device=DEV)
    eps, alpha, steps, rs = c["eps"], c["alpha"], c["steps"], c["random_start"]

    def run():
        xa = sign_steps(model, x, y, eps, alpha, steps, rs)
        with torch.no_grad():
            return model(xa).argmax(1)

    return run


def main():
    global DEV
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    warmup, reps = spec["warmup"], spec["reps"]
    DEV = torch.device(spec.get("device", "cuda"))
    if DEV.type == "cpu" and spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    kinds = {"conv2d": conv_case, "linear": linear_case, "train_step": train_case, "adv_train_pgd10": adv_train_case,
             "adv_train": adv_train_case, "attack": attack_case}
    out = []
    for c in spec["cases"]:
        fn = kinds[c["kind"]](c)
        med, lo, hi = timed(fn, warmup, reps)
        out.append({"case": c, "median_ms": med, "min_ms": lo, "max_ms": hi, "version": torch.__version__})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
