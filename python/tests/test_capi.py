"""The Python module on the C ABI: train a small model through it, save it, attack it, and
compare with `perturb eval` on the same file and digits (argv: the perturb binary, a folder)."""

import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import perturb  # noqa: E402

perturb_bin, work = sys.argv[1], sys.argv[2]
backend = perturb.Backend("cpu", threads=2)
assert backend.name == "cpu" and backend.device

model = backend.build("mlp", seed=1)
x, y = perturb.mnist10k("train", 0, 4000)
trainer = model.trainer("fgsm-rs", eps=0.1)
losses = [trainer.step(x[i:i + 100], y[i:i + 100], lr=0.05) for _ in range(2) for i in range(0, 4000, 100)]
assert trainer.steps == 80, trainer.steps
assert np.isfinite(losses).all() and losses[-1] < losses[0], losses

path = os.path.join(work, "python-mlp.safetensors")
model.save(path)
model = backend.load(path)

n = 200
xt, yt = perturb.mnist10k("test", 0, n)
clean = float((model.predict(xt) == yt).mean())
assert clean > 0.6, clean

g, loss = model.input_grad(xt[:4], yt[:4])
assert g.shape == xt[:4].shape and np.isfinite(g).all() and loss > 0

adv, correct = model.attack("pgd", xt, yt, eps=0.1, steps=10, step_size=0.02)
assert np.abs(adv - xt).max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
assert correct == int((model.predict(adv) == yt).sum())
assert correct < clean * n, (correct, clean)

out = subprocess.run(
    [perturb_bin, "eval", "--model", path, "--backend", "cpu", "--threads", "2", "--test-limit", str(n),
     "--attacks", "pgd", "--eps", "0.1", "--steps", "10", "--step-size", "0.02", "--json"],
    check=True, capture_output=True, text=True,
).stdout
ev = json.loads(out.strip().splitlines()[-1])
assert ev["clean_accuracy"] == clean, (ev["clean_accuracy"], clean)
assert ev["attacks"]["pgd"]["accuracy"] == correct / n, (ev["attacks"]["pgd"]["accuracy"], correct / n)

# AutoAttack-standard through the ABI on a few digits: inside the ball, never above clean.
xa, ya = xt[:16], yt[:16]
aa_adv, aa_robust = model.autoattack(xa, ya, eps=0.1)
assert np.abs(aa_adv - xa).max() <= 0.1 + 1e-6 and aa_adv.min() >= 0 and aa_adv.max() <= 1
assert aa_robust == int((model.predict(aa_adv) == ya).sum()), aa_robust
assert aa_robust <= int((model.predict(xa) == ya).sum())

try:
    backend.load(os.path.join(work, "missing.safetensors"))
    raise AssertionError("a missing file loaded")
except perturb.Error as e:
    assert e.kind == "model" and "missing.safetensors" in str(e), e
try:
    model.forward(np.zeros(783, dtype=np.float32))
    raise AssertionError("a partial image was accepted")
except ValueError:
    pass
print(f"python: perturb {perturb.version()}, clean {clean:.3f}, pgd {correct / n:.3f} = perturb eval's")
