#!/usr/bin/env python3
"""The reference side of perturb's AutoAttack comparison (not used by CI or the tests).

Loads a perturb model file (safetensors; the architecture is in its metadata) into PyTorch,
takes the first --n of perturb's held-out digits (the last 2,000 of data/mnist10k, pixels / 255),
and runs AutoAttack (standard version, L-inf) on PyTorch's CPU backend with --threads threads.
Prints one JSON line: clean and robust accuracy, seconds (per attack for the original), versions.

--library original (default): the authors' implementation (github.com/fra31/auto-attack, the
`autoattack` package RobustBench runs; put its folder on PYTHONPATH). Its standard version runs
APGD-CE and APGD-T with 100 iterations, FAB-T with 100, Square with 5,000 queries.
--library torchattacks: torchattacks.AutoAttack. Note that torchattacks 3.5 builds its
"standard" version with its attacks' default of 10 iterations for APGD, APGD-T and FAB (not
100), so it is a weaker and cheaper evaluation than the original.

    PYTHONPATH=/path/to/auto-attack python scripts/autoattack_reference.py \
        --model out/cnn-small.safetensors --eps 0.3 --n 500
"""
import argparse, contextlib, gzip, io, json, os, re, sys, time

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def build(arch):
    layers = []
    for l in arch:
        t = l["type"]
        if t == "conv2d":
            layers.append(torch.nn.Conv2d(l["in"], l["out"], l["kernel"], l["stride"], l["padding"]))
        elif t == "relu":
            layers.append(torch.nn.ReLU())
        elif t == "flatten":
            layers.append(torch.nn.Flatten())
        elif t == "linear":
            layers.append(torch.nn.Linear(l["in"], l["out"]))
        elif t == "maxpool2d":
            layers.append(torch.nn.MaxPool2d(l["kernel"], l["stride"]))
        else:
            sys.exit(f"unknown layer type {t!r}")
    return torch.nn.Sequential(*layers)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--library", choices=["original", "torchattacks"], default="original")
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "data", "mnist10k"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with safe_open(a.model, "pt") as f:
        meta = f.metadata()
    model = build(json.loads(meta["architecture"]))
    model.load_state_dict(load_file(a.model))
    model.eval()
    images = read_idx(os.path.join(a.data, "images-idx3-ubyte.gz"))[-2000:][: a.n]
    labels = read_idx(os.path.join(a.data, "labels-idx1-ubyte.gz"))[-2000:][: a.n]
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0
    y = torch.tensor(labels, dtype=torch.long)
    with torch.no_grad():
        clean = (model(x).argmax(1) == y).float().mean().item()
    stages = []
    if a.library == "original":
        from autoattack import AutoAttack
        import autoattack

        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            atk = AutoAttack(model, norm="Linf", eps=a.eps, version="standard", seed=a.seed, device="cpu")
            t0 = time.time()
            adv = atk.run_standard_evaluation(x, y, bs=a.batch_size)
        secs = time.time() - t0
        sys.stderr.write(log.getvalue())
        # "robust accuracy after APGD-CE: 77.80% (total time 12.3 s)"
        for m in re.finditer(r"robust accuracy after ([A-Z-]+): ([0-9.]+)% \(total time ([0-9.]+) s\)", log.getvalue()):
            stages.append({"name": m.group(1).lower(), "robust_accuracy": float(m.group(2)) / 100,
                           "total_seconds": float(m.group(3))})
        version = getattr(autoattack, "__version__", "git a392200")
    else:
        import torchattacks

        atk = torchattacks.AutoAttack(model, norm="Linf", eps=a.eps, version="standard", n_classes=10, seed=a.seed)
        t0 = time.time()
        adv = torch.cat([atk(x[s: s + a.batch_size], y[s: s + a.batch_size]) for s in range(0, len(y), a.batch_size)])
        secs = time.time() - t0
        version = torchattacks.__version__
    assert (adv - x).abs().max().item() <= a.eps + 1e-5
    with torch.no_grad():
        correct = (model(adv).argmax(1) == y).sum().item()
    print(json.dumps({"model": a.model, "n": len(y), "eps": a.eps, "clean_accuracy": clean,
                      "robust_accuracy": correct / len(y), "seconds": secs, "stages": stages,
                      "threads": a.threads, "library": a.library, "library_version": version,
                      "torch_version": torch.__version__}))


if __name__ == "__main__":
    main()
