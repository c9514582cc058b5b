"""Hand-computed examples of the algorithms torch.optim does not have (docs/algorithms.md).

Each expected value is computed here with Python floats from the published update written out
term by term, independently of fusedopt's code, and compared with the reference in float64.
"""
from __future__ import annotations

import math

import pytest
import torch

import fusedopt

G = [[0.5, -1.5], [-0.25, 2.0], [1.0, 0.125]]  # three steps of grads for a 2-element param
P0 = [0.3, -0.7]
LR, B1, B2, EPS, WD = 0.01, 0.9, 0.999, 1e-8, 0.1


def _run(opt_factory, steps=3, loss=None):
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    opt = opt_factory([p])
    for t in range(steps):
        p.grad = torch.tensor(G[t], dtype=torch.float64)
        if loss is None:
            opt.step()
        else:
            opt.step(loss=torch.tensor(loss[t], dtype=torch.float64))
    return p.detach().tolist()


def _adabelief_by_hand():
    """AdaBelief 0.2 (rectify off, decoupled decay): s <- b2 s + (1-b2)(g - m)^2 + eps;
    p <- p (1 - lr wd) - lr / bc1 * m / (sqrt(s) / sqrt(bc2) + eps)."""
    out = []
    for i in range(2):
        p, m, s = P0[i], 0.0, 0.0
        for t in range(1, 4):
            g = G[t - 1][i]
            p *= 1 - LR * WD
            m = B1 * m + (1 - B1) * g
            s = B2 * s + (1 - B2) * (g - m) ** 2 + EPS
            bc1, bc2 = 1 - B1 ** t, 1 - B2 ** t
            p -= LR / bc1 * m / (math.sqrt(s) / math.sqrt(bc2) + EPS)
        out.append(p)
    return out


def _eadam_by_hand():
    """EAdam: v <- b2 v + (1-b2) g^2 + eps; p <- p (1 - lr wd) - lr sqrt(bc2)/bc1 * m / sqrt(v)."""
    out = []
    for i in range(2):
        p, m, v = P0[i], 0.0, 0.0
        for t in range(1, 4):
            g = G[t - 1][i]
            p *= 1 - LR * WD
            m = B1 * m + (1 - B1) * g
            v = B2 * v + (1 - B2) * g * g + EPS
            bc1, bc2 = 1 - B1 ** t, 1 - B2 ** t
            p -= LR * math.sqrt(bc2) / bc1 * m / math.sqrt(v)
        out.append(p)
    return out


def _yogi_by_hand():
    """Yogi: v <- v - (1-b2) sign(v - g^2) g^2; the Adam step with bias correction."""
    out = []
    for i in range(2):
        p, m, v = P0[i], 0.0, 0.0
        for t in range(1, 4):
            g = G[t - 1][i]
            p *= 1 - LR * WD
            m = B1 * m + (1 - B1) * g
            v = v - (1 - B2) * math.copysign(1.0, v - g * g) * g * g if v != g * g else v
            bc1, bc2 = 1 - B1 ** t, 1 - B2 ** t
            p -= LR / bc1 * m / (math.sqrt(v) / math.sqrt(bc2) + 1e-3)
        out.append(p)
    return out


def _adamd_by_hand():
    """AdamD (fusedopt's reading of P2): no bias correction, p <- p - lr (m/(sqrt(v)+eps) + wd p)."""
    out = []
    for i in range(2):
        p, m, v = P0[i], 0.0, 0.0
        for t in range(1, 4):
            g = G[t - 1][i]
            m = B1 * m + (1 - B1) * g
            v = B2 * v + (1 - B2) * g * g
            p = p - LR * (m / (math.sqrt(v) + EPS) + WD * p)
        out.append(p)
    return out


CASES = {
    "adabelief": (lambda ps: fusedopt.AdamW(ps, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD,
                                            variant="adabelief", backend="reference"),
                  _adabelief_by_hand),
    "eadam": (lambda ps: fusedopt.AdamW(ps, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD,
                                        variant="eadam", backend="reference"), _eadam_by_hand),
    "yogi": (lambda ps: fusedopt.AdamW(ps, lr=LR, betas=(B1, B2), eps=1e-3, weight_decay=WD,
                                       variant="yogi", backend="reference"), _yogi_by_hand),
    "adamd": (lambda ps: fusedopt.AdamD(ps, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=WD,
                                        backend="reference"), _adamd_by_hand),
}


@pytest.mark.parametrize("name", list(CASES))
def test_three_steps_by_hand(name):
    factory, by_hand = CASES[name]
    got, want = _run(factory), by_hand()
    assert got == pytest.approx(want, rel=1e-13, abs=1e-15)
    assert got != pytest.approx(P0, abs=1e-4)  # the example moves the params


def test_adaml_with_constant_gap_is_adam():
    """AdamL "gap" scaling with a constant loss keeps c = 1 (the gap never shrinks): it is Adam."""
    adaml = _run(lambda ps: fusedopt.AdamL(ps, lr=LR, betas=(B1, B2), eps=EPS, f_star=0.0,
                                           backend="reference"), loss=[2.0, 2.0, 2.0])
    adam = _run(lambda ps: fusedopt.AdamW(ps, lr=LR, betas=(B1, B2), eps=EPS, weight_decay=0.0,
                                          backend="reference"))
    assert adaml == pytest.approx(adam, rel=1e-14)


def test_adaml_gap_scaling_by_hand():
    """c_t = clamp((l_t / l_1)^gamma, c_min, 1) with l_t the bias-corrected EMA of the loss minus
    f*; the Adam step is multiplied by c_t (fusedopt's reading of P1)."""
    losses, fstar, gamma = [4.0, 1.0, 0.25], 0.0, 0.5
    got = _run(lambda ps: fusedopt.AdamL(ps, lr=LR, betas=(B1, B2), eps=EPS, f_star=fstar,
                                         gamma=gamma, backend="reference"), loss=losses)
    want = []
    for i in range(2):
        p, m, v, ema, gap1 = P0[i], 0.0, 0.0, 0.0, None
        for t in range(1, 4):
            g = G[t - 1][i]
            ema = 0.9 * ema + 0.1 * losses[t - 1]
            gap = ema / (1 - 0.9 ** t) - fstar
            gap1 = gap if gap1 is None else gap1
            c = min(1.0, max(1e-3, (gap / gap1) ** gamma))
            m = B1 * m + (1 - B1) * g
            v = B2 * v + (1 - B2) * g * g
            bc1, bc2 = 1 - B1 ** t, 1 - B2 ** t
            p -= LR * c / bc1 * m / (math.sqrt(v) / math.sqrt(bc2) + EPS)
        want.append(p)
    assert got == pytest.approx(want, rel=1e-13)


def test_iansgd_by_hand():
    """x <- x - lr / max(c ||g'|| + delta, floor)^beta * g."""
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    opt = fusedopt.IANSGD([p], lr=0.3, beta=2 / 3, delta=0.5, floor=2.0, backend="reference")
    want = list(P0)
    for t in range(3):
        gprime = [G[(t + 1) % 3][0] * 3, G[(t + 1) % 3][1] * 3]
        p.grad = torch.tensor(gprime, dtype=torch.float64)
        opt.record_normalizer()
        p.grad = torch.tensor(G[t], dtype=torch.float64)
        opt.step()
        h = max(math.hypot(*gprime) + 0.5, 2.0)
        want = [w - 0.3 / h ** (2 / 3) * g for w, g in zip(want, G[t])]
    assert p.detach().tolist() == pytest.approx(want, rel=1e-13)


def test_adagrad_norm_by_hand():
    """B <- B + ||g||^2; p <- p - lr g / (sqrt(B) + eps)."""
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    opt = fusedopt.Adagrad([p], lr=0.1, eps=1e-10, norm=True, initial_accumulator_value=0.5,
                           backend="reference")
    want, acc = list(P0), 0.5
    for t in range(3):
        p.grad = torch.tensor(G[t], dtype=torch.float64)
        opt.step()
        acc += sum(g * g for g in G[t])
        want = [w - 0.1 * g / (math.sqrt(acc) + 1e-10) for w, g in zip(want, G[t])]
    assert p.detach().tolist() == pytest.approx(want, rel=1e-13)


def test_nsgdm_by_hand():
    """m <- (1 - rho) m + rho g; p <- p - lr / (||m|| + delta) * m."""
    p = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    opt = fusedopt.NSGDm([p], lr=0.1, momentum=0.3, delta=0.01, backend="reference")
    want, m = list(P0), [0.0, 0.0]
    for t in range(3):
        p.grad = torch.tensor(G[t], dtype=torch.float64)
        opt.step()
        m = [0.7 * mi + 0.3 * g for mi, g in zip(m, G[t])]
        h = math.hypot(*m) + 0.01
        want = [w - 0.1 / h * mi for w, mi in zip(want, m)]
    assert p.detach().tolist() == pytest.approx(want, rel=1e-13)
