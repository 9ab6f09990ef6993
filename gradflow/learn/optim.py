"""What the runs of a training group share: optimizer, schedule, batch and evaluation settings.

``Settings`` is ``gradflow.config.Train`` (steps, batch, optimizer and its options, schedule and its
options, eval_every, eval_batch, solved_fraction, early_stop; the per-run learning rate and clip of a
config live there too, ``train_runs`` takes them per run).

Example::

    settings = Settings(steps=1000, optimizer="adam", schedule="cosine_decay",
                        schedule_options={"decay_steps": 1000})
    check_settings(settings)
    opt = optimizer(settings, learning_rate=1e-3, clip=1.0)     # an optax GradientTransformation
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import optax

from gradflow.config import Train as Settings  # the one settings type: a training config's train section

OPTIMIZERS = tuple(
    n
    for n in (
        "adam",
        "adamw",
        "sgd",
        "rmsprop",
        "adagrad",
        "adadelta",
        "adamax",
        "amsgrad",
        "nadam",
        "radam",
        "adabelief",
        "lamb",
        "lion",
        "yogi",
        "novograd",
        "sign_sgd",
    )
    if hasattr(optax, n)
)
SCHEDULES = {  # name -> optax factory; values (init/peak/end) are multipliers of the learning rate
    "constant": None,
    "cosine_decay": optax.cosine_decay_schedule,
    "warmup_cosine_decay": optax.warmup_cosine_decay_schedule,
    "exponential_decay": optax.exponential_decay,
    "linear": optax.linear_schedule,
    "polynomial": optax.polynomial_schedule,
    "piecewise_constant": optax.piecewise_constant_schedule,
    "warmup_exponential_decay": optax.warmup_exponential_decay_schedule,
}
_SCHEDULE_DEFAULTS = {"init_value": 1.0, "peak_value": 1.0}


def check_settings(settings: Settings) -> None:
    """Raise ``ValueError`` (one line) for settings a group cannot train with."""
    for name in ("steps", "batch", "eval_every", "eval_batch"):
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if settings.steps % settings.eval_every:
        raise ValueError(f"steps ({settings.steps}) must be a multiple of eval_every ({settings.eval_every})")
    check_optimizer(settings.optimizer, settings.optimizer_options)
    check_schedule(settings.schedule, settings.schedule_options)
    if not 0.0 < settings.solved_fraction <= 1.0:
        raise ValueError(f"solved_fraction must be in (0, 1], got {settings.solved_fraction!r}")


def check_optimizer(name: str, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the unknown optimizer or option (and the choices)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose from {list(OPTIMIZERS)}")
    known = [p for p in inspect.signature(getattr(optax, name)).parameters if p != "learning_rate"]
    for key in options:
        if key not in known:
            raise ValueError(f"unknown option {key!r} for optimizer {name!r}; options: {known}")


def check_schedule(name: str | None, options: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the unknown schedule, option or missing argument."""
    if name is None:
        if options:
            raise ValueError(f"schedule options {dict(options)} given without a schedule name")
        return
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose from {list(SCHEDULES)}")
    if SCHEDULES[name] is None:
        if options:
            raise ValueError(f"schedule 'constant' takes no options, got {dict(options)}")
        return
    params = inspect.signature(SCHEDULES[name]).parameters
    for key in options:
        if key not in params:
            raise ValueError(f"unknown option {key!r} for schedule {name!r}; options: {list(params)}")
    for key, p in params.items():
        if p.default is inspect.Parameter.empty and key not in options and key not in _SCHEDULE_DEFAULTS:
            raise ValueError(f"schedule {name!r} needs {key}=<value>")


def _multiplier(name: str | None, options: Mapping[str, Any]):
    if name is None or SCHEDULES[name] is None:
        return None
    fn = SCHEDULES[name]
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in _SCHEDULE_DEFAULTS.items() if k in params}
    kwargs.update(options)
    if name == "piecewise_constant" and "boundaries_and_scales" in kwargs:
        kwargs["boundaries_and_scales"] = {
            int(k): float(v) for k, v in kwargs["boundaries_and_scales"].items()
        }
    return fn(**kwargs)


def optimizer(settings: Settings, learning_rate, clip) -> optax.GradientTransformation:
    """``clip_by_global_norm(clip)`` (``inf``: off) then the named optimizer at ``learning_rate`` x schedule.

    ``learning_rate`` and ``clip`` may be traced scalars (one per run under ``vmap``).
    """
    mult = _multiplier(settings.schedule, settings.schedule_options)
    rate = learning_rate if mult is None else (lambda count: learning_rate * mult(count))
    opt = getattr(optax, settings.optimizer)(learning_rate=rate, **settings.optimizer_options)
    return optax.chain(optax.clip_by_global_norm(clip), opt)
