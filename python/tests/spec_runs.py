"""Spec §7.1 written from its text in plain Python (no metasched code): the random streams,
a run's learner initialisation `init_theta(ρ)` and the minibatch indices of a step, so that a
recorded trajectory can be checked against the spec rather than against the Rust that wrote
it."""

from __future__ import annotations

import math
from typing import List

import numpy as np

MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    """SplitMix64's finaliser, wrapping u64 arithmetic."""
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


class Stream:
    """The stream `(seed, [id_1, ..., id_m])`."""

    def __init__(self, seed: int, ids: List[int]):
        key = mix64(seed ^ 0x6D65746173636864)
        for i in ids:
            key = mix64(key ^ mix64(i + GAMMA))
        self.key, self.i = key, 0

    def next(self) -> int:
        self.i += 1
        return mix64(self.key + self.i * GAMMA)

    def uniform_in(self, a: float, b: float) -> float:
        return a + (b - a) * ((self.next() >> 11) * 2.0**-53)


def init_theta(run_seed: int, layers: List[int]) -> List[np.ndarray]:
    """`theta_0` of a run, as the tensors `layers.{l}.weight, layers.{l}.bias, ...`."""
    out = []
    for l in range(len(layers) - 1):
        fan_in, fan_out = layers[l], layers[l + 1]
        beta = 1.0 / math.sqrt(fan_in)
        s = Stream(run_seed, [0, l])
        w = [s.uniform_in(-beta, beta) for _ in range(fan_out * fan_in)]
        b = [s.uniform_in(-beta, beta) for _ in range(fan_out)]
        out += [np.array(w, np.float32).reshape(fan_out, fan_in), np.array(b, np.float32)]
    return out


class EpochPermutation:
    """`π_e` of a training split of `n` points: a 4-round Feistel network with cycle walking."""

    def __init__(self, run_seed: int, epoch: int, n: int):
        s = Stream(run_seed, [2, epoch])
        self.keys = [s.next() for _ in range(4)]
        k = 2
        while (1 << k) < n:
            k += 2
        self.n, self.h, self.mask = n, k // 2, (1 << (k // 2)) - 1

    def _encrypt(self, x: int) -> int:
        left, right = x >> self.h, x & self.mask
        for key in self.keys:
            left, right = right, left ^ (mix64(right ^ key) & self.mask)
        return (left << self.h) | right

    def __call__(self, j: int) -> int:
        x = self._encrypt(j)
        while x >= self.n:
            x = self._encrypt(x)
        return x


def batch_indices(run_seed: int, n: int, b: int, t: int) -> List[int]:
    """The training-split indices of minibatch `B_t`."""
    out, perms = [], {}
    for i in range(b):
        p = t * b + i
        e = p // n
        if e not in perms:
            perms[e] = EpochPermutation(run_seed, e, n)
        out.append(perms[e](p % n))
    return out
