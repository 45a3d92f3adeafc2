"""Learning-rate schedules (Optax's names and formulas): callables of the update count (a
Python int, or an int32 array under jit) that every optimizer takes as its learning rate.
"""

from __future__ import annotations

import math

from .. import numpy as fnp

__all__ = ["constant_schedule", "polynomial_schedule", "linear_schedule", "cosine_decay_schedule",
           "join_schedules", "warmup_cosine_decay_schedule", "warmup_constant_schedule",
           "exponential_decay", "piecewise_constant_schedule"]


def constant_schedule(value):
    """lr(count) = value."""
    return lambda count: value


def polynomial_schedule(init_value, end_value, power, transition_steps, transition_begin=0):
    """(init - end) * (1 - t / transition_steps)^power + end, t = clip(count - begin, 0, steps)."""
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count):
        t = fnp.clip(count - transition_begin, 0, transition_steps)
        frac = 1 - t / transition_steps
        return (init_value - end_value) * frac ** power + end_value

    return schedule


def linear_schedule(init_value, end_value, transition_steps, transition_begin=0):
    """Linear ramp from init_value to end_value over transition_steps (after transition_begin)."""
    return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def cosine_decay_schedule(init_value, decay_steps, alpha=0.0, exponent=1.0):
    """init * ((1 - alpha) * (0.5 (1 + cos(pi t / decay_steps)))^exponent + alpha),
    t = min(count, decay_steps)."""
    if decay_steps <= 0:
        raise ValueError(f"cosine_decay_schedule: decay_steps must be positive, got {decay_steps}")

    def schedule(count):
        t = fnp.minimum(count, decay_steps)
        cosine = 0.5 * (1 + fnp.cos(math.pi * t / decay_steps))
        return init_value * ((1 - alpha) * cosine ** exponent + alpha)

    return schedule


def join_schedules(schedules, boundaries):
    """schedules[i](count - boundaries[i-1]) for boundaries[i-1] <= count < boundaries[i]."""

    def schedule(count):
        out = schedules[0](count)
        for s, b in zip(schedules[1:], boundaries):
            out = fnp.where(count < b, out, s(count - b))
        return out

    return schedule


def warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps,
                                 end_value=0.0, exponent=1.0):
    """Linear warmup init -> peak over warmup_steps, then cosine decay peak -> end_value, reaching
    it at count = decay_steps (decay_steps includes the warmup, as in Optax)."""
    alpha = 0.0 if peak_value == 0 else end_value / peak_value
    return join_schedules(
        [linear_schedule(init_value, peak_value, warmup_steps),
         cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent)],
        [warmup_steps])


def warmup_constant_schedule(init_value, peak_value, warmup_steps):
    """Linear warmup from init_value to peak_value over warmup_steps, then peak_value."""
    return linear_schedule(init_value, peak_value, warmup_steps)


def exponential_decay(init_value, transition_steps, decay_rate, transition_begin=0,
                      staircase=False, end_value=None):
    """init * decay_rate^((count - begin) / transition_steps) (floored when staircase), init
    before transition_begin, clipped at end_value when given."""
    if transition_steps <= 0:
        raise ValueError("exponential_decay: transition_steps must be positive, got "
                         f"{transition_steps}")

    def schedule(count):
        t = count - transition_begin
        p = t / transition_steps
        if staircase:
            p = fnp.floor(p)
        v = fnp.where(t <= 0, init_value, init_value * decay_rate ** p)
        if end_value is not None:
            v = fnp.maximum(v, end_value) if decay_rate < 1 else fnp.minimum(v, end_value)
        return v

    return schedule


def piecewise_constant_schedule(init_value, boundaries_and_scales=None):
    """init_value, multiplied by scales[b] for every boundary b <= count."""
    items = sorted((boundaries_and_scales or {}).items())

    def schedule(count):
        v = init_value
        for b, s in items:
            v = fnp.where(count < b, v, v * s)
        return v

    return schedule
