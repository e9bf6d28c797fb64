"""perturb from Python: the C ABI (libperturb_capi) through ctypes, numpy arrays without copies.

    import numpy as np, perturb
    backend = perturb.Backend("cpu")
    model = backend.load("model.safetensors")
    x, y = perturb.mnist10k("test", 0, 500)           # float32 [500, 1, 28, 28], uint32 [500]
    adv, n_correct = model.attack("pgd", x, y, eps=0.3, steps=40, step_size=0.01)
    print("robust accuracy", n_correct / len(y))

The library is found through $PERTURB_LIB (a path to libperturb_capi.so), else next to this
package in the build tree (target/release), else by the system loader. Every failed call raises
perturb.Error with the library's message and status code.
"""

import ctypes
import os
from ctypes import POINTER, Structure, byref, c_char_p, c_float, c_size_t, c_uint8, c_uint32, c_uint64, c_void_p

import numpy as np

__all__ = ["Backend", "Model", "Trainer", "Error", "mnist10k", "version"]

_STATUS = {
    1: "null pointer", 2: "invalid argument", 3: "length", 4: "unavailable", 5: "model",
    6: "backend", 7: "invalid handle", 8: "diverged", 9: "internal",
}


class Error(RuntimeError):
    """A failed call: `status` is the PerturbStatus code, the message the library's."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.kind = _STATUS.get(status, "unknown")


class _Shape(Structure):
    _fields_ = [("channels", c_size_t), ("height", c_size_t), ("width", c_size_t), ("classes", c_size_t)]


class _AttackOptions(Structure):
    _fields_ = [
        ("eps", c_float), ("eps_l2", c_float), ("steps", c_uint32), ("step_size", c_float),
        ("step_size_l2", c_float), ("restarts", c_uint32), ("alpha", c_float), ("queries", c_uint32),
        ("p_init", c_float), ("target_rule", c_uint32), ("seed", c_uint64), ("batch_size", c_uint32),
    ]


class _AutoAttackOptions(Structure):
    _fields_ = [("eps", c_float), ("seed", c_uint64), ("n_target_classes", c_uint32), ("batch_size", c_uint32)]


class _TrainerOptions(Structure):
    _fields_ = [
        ("method", c_char_p), ("eps", c_float), ("pgd_steps", c_uint32), ("lambda_", c_float),
        ("optimizer", c_uint32), ("momentum", c_float), ("nesterov", c_uint8), ("weight_decay", c_float),
        ("seed", c_uint64),
    ]


def _find_library():
    env = os.environ.get("PERTURB_LIB")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for sub in ("target/release", "target/release/deps", "target/debug"):
        p = os.path.join(here, "..", "..", sub, "libperturb_capi.so")
        if os.path.exists(p):
            return os.path.normpath(p)
    return "libperturb_capi.so"


_lib = ctypes.CDLL(_find_library())
_F32P = POINTER(c_float)
_U32P = POINTER(c_uint32)
_SIG = {
    "perturb_version": ([], c_char_p),
    "perturb_last_error": ([], c_char_p),
    "perturb_backend_open": ([c_char_p, c_uint32, POINTER(c_void_p)], ctypes.c_int),
    "perturb_backend_name": ([c_void_p, POINTER(c_char_p)], ctypes.c_int),
    "perturb_backend_device": ([c_void_p, ctypes.c_char_p, c_size_t, POINTER(c_size_t)], ctypes.c_int),
    "perturb_backend_destroy": ([POINTER(c_void_p)], ctypes.c_int),
    "perturb_model_load": ([c_void_p, c_char_p, POINTER(c_void_p)], ctypes.c_int),
    "perturb_model_build": ([c_void_p, c_char_p, _Shape, c_uint64, POINTER(c_void_p)], ctypes.c_int),
    "perturb_model_shape": ([c_void_p, POINTER(_Shape)], ctypes.c_int),
    "perturb_model_forward": ([c_void_p, _F32P, c_size_t, c_size_t, _F32P, c_size_t], ctypes.c_int),
    "perturb_model_input_grad": ([c_void_p, _F32P, c_size_t, _U32P, c_size_t, _F32P, c_size_t, _F32P], ctypes.c_int),
    "perturb_model_save": ([c_void_p, c_char_p], ctypes.c_int),
    "perturb_model_destroy": ([POINTER(c_void_p)], ctypes.c_int),
    "perturb_attack_options_default": ([POINTER(_AttackOptions)], ctypes.c_int),
    "perturb_attack": ([c_void_p, c_char_p, POINTER(_AttackOptions), _F32P, c_size_t, _U32P, c_size_t, _F32P,
                        c_size_t, POINTER(c_size_t)], ctypes.c_int),
    "perturb_autoattack_options_default": ([POINTER(_AutoAttackOptions)], ctypes.c_int),
    "perturb_autoattack": ([c_void_p, POINTER(_AutoAttackOptions), _F32P, c_size_t, _U32P, c_size_t, _F32P, c_size_t,
                            POINTER(c_size_t)], ctypes.c_int),
    "perturb_trainer_options_default": ([POINTER(_TrainerOptions)], ctypes.c_int),
    "perturb_trainer_create": ([c_void_p, POINTER(_TrainerOptions), POINTER(c_void_p)], ctypes.c_int),
    "perturb_trainer_step": ([c_void_p, _F32P, c_size_t, _U32P, c_size_t, c_float, _F32P], ctypes.c_int),
    "perturb_trainer_steps": ([c_void_p, POINTER(c_uint64)], ctypes.c_int),
    "perturb_trainer_destroy": ([POINTER(c_void_p)], ctypes.c_int),
    "perturb_mnist10k_len": ([c_uint32, POINTER(c_size_t)], ctypes.c_int),
    "perturb_mnist10k": ([c_uint32, c_size_t, c_size_t, _F32P, c_size_t, _U32P, c_size_t], ctypes.c_int),
}
for _name, (_args, _ret) in _SIG.items():
    _f = getattr(_lib, _name)
    _f.argtypes, _f.restype = _args, _ret


def _check(status):
    if status != 0:
        msg = _lib.perturb_last_error()
        raise Error(status, msg.decode("utf-8", "replace") if msg else "unknown error")


def version():
    """The library's version string."""
    return _lib.perturb_version().decode()


def _images(x, per):
    """A C-contiguous float32 view of x (no copy when it already is one) and its image count."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.size % per:
        raise ValueError(f"x has {x.size} values, not a whole number of {per}-value images")
    return x, x.size // per


def _labels(y, n):
    y = np.ascontiguousarray(y, dtype=np.uint32)
    if y.size != n:
        raise ValueError(f"{y.size} labels for {n} images")
    return y


def _f32(a):
    return a.ctypes.data_as(_F32P)


def _u32(a):
    return a.ctypes.data_as(_U32P)


class Backend:
    """An open backend: "cpu", "wgpu", "cuda" or "auto"; `threads` CPU threads (0: all cores)."""

    def __init__(self, kind="cpu", threads=0):
        self._h = c_void_p()
        _check(_lib.perturb_backend_open(kind.encode(), threads, byref(self._h)))

    @property
    def name(self):
        out = c_char_p()
        _check(_lib.perturb_backend_name(self._h, byref(out)))
        return out.value.decode()

    @property
    def device(self):
        need = c_size_t()
        _check(_lib.perturb_backend_device(self._h, None, 0, byref(need)))
        buf = ctypes.create_string_buffer(need.value)
        _check(_lib.perturb_backend_device(self._h, buf, need.value, None))
        return buf.value.decode()

    def load(self, path):
        """A model file written by `perturb train` or Model.save."""
        return Model._wrap(self, lambda out: _lib.perturb_model_load(self._h, os.fsencode(path), out))

    def build(self, arch, input_shape=(1, 28, 28), classes=10, seed=0):
        """A freshly initialised "cnn-small", "cnn-madry" or "mlp"."""
        shape = _Shape(*input_shape, classes)
        return Model._wrap(self, lambda out: _lib.perturb_model_build(self._h, arch.encode(), shape, seed, out))

    def close(self):
        if self._h:
            _check(_lib.perturb_backend_destroy(byref(self._h)))

    __del__ = close

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Model:
    """A model on a backend. Arrays are float32 N x C x H x W in [0, 1]; labels uint32."""

    @classmethod
    def _wrap(cls, backend, make):
        m = cls.__new__(cls)
        m._h = c_void_p()
        m._backend = backend
        _check(make(byref(m._h)))
        s = _Shape()
        _check(_lib.perturb_model_shape(m._h, byref(s)))
        m.input_shape, m.classes = (s.channels, s.height, s.width), s.classes
        m._per = s.channels * s.height * s.width
        return m

    def forward(self, x):
        """Logits, float32 [n, classes]."""
        x, n = _images(x, self._per)
        out = np.empty((n, self.classes), dtype=np.float32)
        _check(_lib.perturb_model_forward(self._h, _f32(x), x.size, n, _f32(out), out.size))
        return out

    def predict(self, x):
        return self.forward(x).argmax(axis=1)

    def input_grad(self, x, y):
        """(d sum_i CE_i / d x with x's shape, the summed loss)."""
        x, n = _images(x, self._per)
        y = _labels(y, n)
        g = np.empty_like(x)
        loss = c_float()
        _check(_lib.perturb_model_input_grad(self._h, _f32(x), x.size, _u32(y), n, _f32(g), g.size, byref(loss)))
        return g, loss.value

    def attack(self, name, x, y, **options):
        """(adversarial images, images still correct) under attack `name` ("fgsm", "pgd",
        "pgd-l2", "cw", "square", ...; "-targeted" suffix), as `perturb eval --attacks NAME`.
        Options: eps, eps_l2, steps, step_size, step_size_l2, restarts, alpha, queries, p_init,
        target_rule (0 random, 1 next, 2 least likely), seed, batch_size."""
        o = _AttackOptions()
        _check(_lib.perturb_attack_options_default(byref(o)))
        for k, v in options.items():
            if not hasattr(o, k) or k.startswith("_"):
                raise TypeError(f"unknown attack option '{k}'")
            setattr(o, k, v)
        x, n = _images(x, self._per)
        y = _labels(y, n)
        adv = np.empty_like(x)
        correct = c_size_t()
        _check(_lib.perturb_attack(self._h, name.encode(), byref(o), _f32(x), x.size, _u32(y), n, _f32(adv), adv.size,
                                   byref(correct)))
        return adv, correct.value

    def autoattack(self, x, y, eps=0.3, seed=0, n_target_classes=9, batch_size=500):
        """(adversarial images, images robust under all four attacks): AutoAttack-standard."""
        o = _AutoAttackOptions(eps, seed, n_target_classes, batch_size)
        x, n = _images(x, self._per)
        y = _labels(y, n)
        adv = np.empty_like(x)
        robust = c_size_t()
        _check(_lib.perturb_autoattack(self._h, byref(o), _f32(x), x.size, _u32(y), n, _f32(adv), adv.size,
                                       byref(robust)))
        return adv, robust.value

    def trainer(self, method="pgd", eps=0.3, optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=0.0,
                pgd_steps=10, lam=2.0, seed=0):
        """A Trainer whose steps update this model's weights (methods as `perturb train --method`)."""
        return Trainer(self, method, eps, optimizer, momentum, nesterov, weight_decay, pgd_steps, lam, seed)

    def save(self, path):
        """Writes the model atomically, in the format `perturb` reads."""
        _check(_lib.perturb_model_save(self._h, os.fsencode(path)))

    def close(self):
        if getattr(self, "_h", None):
            _check(_lib.perturb_model_destroy(byref(self._h)))

    __del__ = close


class Trainer:
    """One optimiser step per call of `step(x, y, lr)`; returns the step's loss."""

    _OPTIMIZERS = {"sgd": 0, "adam": 1, "adamw": 2}

    def __init__(self, model, method, eps, optimizer, momentum, nesterov, weight_decay, pgd_steps, lam, seed):
        if optimizer not in self._OPTIMIZERS:
            raise ValueError(f"optimizer '{optimizer}' is not one of {sorted(self._OPTIMIZERS)}")
        self._method = method.encode()
        o = _TrainerOptions(self._method, eps, pgd_steps, lam, self._OPTIMIZERS[optimizer], momentum,
                            1 if nesterov else 0, weight_decay, seed)
        self._model = model
        self._h = c_void_p()
        _check(_lib.perturb_trainer_create(model._h, byref(o), byref(self._h)))

    def step(self, x, y, lr):
        x, n = _images(x, self._model._per)
        y = _labels(y, n)
        loss = c_float()
        _check(_lib.perturb_trainer_step(self._h, _f32(x), x.size, _u32(y), n, lr, byref(loss)))
        return loss.value

    @property
    def steps(self):
        s = c_uint64()
        _check(_lib.perturb_trainer_steps(self._h, byref(s)))
        return s.value

    def close(self):
        if getattr(self, "_h", None):
            _check(_lib.perturb_trainer_destroy(byref(self._h)))

    __del__ = close


def mnist10k(split="test", offset=0, count=None):
    """(images float32 [count, 1, 28, 28], labels uint32 [count]) of the embedded digits;
    split "train" (8,000) or "test" (the 2,000 held out)."""
    s = {"train": 0, "test": 1}[split]
    total = c_size_t()
    _check(_lib.perturb_mnist10k_len(s, byref(total)))
    if count is None:
        count = total.value - offset
    x = np.empty((count, 1, 28, 28), dtype=np.float32)
    y = np.empty(count, dtype=np.uint32)
    _check(_lib.perturb_mnist10k(s, offset, count, _f32(x), x.size, _u32(y), count))
    return x, y
