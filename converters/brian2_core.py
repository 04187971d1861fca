"""Brian2 objects for SNU layers, run on a step-exact schedule.

This module imports only the standard library, numpy and Brian2, because
:func:`snubridge.converters.brian2_script.export_script` copies its source
into the exported script, which runs without snubridge installed.

Model
-----
Each spiking layer is one ``NeuronGroup`` of ``n_samples * units`` neurons.
Neuron ``sample * units + unit`` is unit ``unit`` of sample ``sample``. Every
synapse connects two neurons of the same sample, so the synaptic matrix is
block diagonal and the samples never interact. Per neuron the variables
are the membrane ``v`` (the SNU state ``s``, dimensionless), the input of the
current step ``I``, the recurrent input ``I_rec`` (spikes of the previous
step times ``H``), the bias ``b`` and the threshold ``theta``. The decay is

- ``decay_mode="exact"``: ``dv/dt = -v / tau`` integrated by Brian2's
  ``exact`` method, ``v <- v * exp(-dt / tau)``;
- ``decay_mode="euler"``: the same equation with Brian2's ``euler`` method,
  ``v <- v - dt * v / tau``, which is ``l * v`` with ``l = 1 - dt / tau`` up to
  rounding;
- ``decay_mode="direct"``: no differential equation; the stored ``l``
  multiplies ``v`` in the integration statement.

``tau`` and ``dt`` are Brian2 quantities in seconds.

Schedule
--------
Brian2's default schedule runs, in each time step, the state updaters
(``groups``), then thresholds, then synaptic propagation, then resets. A
spike emitted at step ``t`` would then reach the next layer in the
``synapses`` slot after that layer's threshold test, so it counts at step
``t + 1``: one step of latency per layer. The SNU has none: a layer's spikes
of step ``t`` are the input of the next layer at the same step ``t``.

Every object built here therefore runs in the single slot ``groups`` and is
ordered explicitly with ``order``, so that one time step ``t`` executes::

    input:    SpikeGeneratorGroup emits the input spikes of step t
    layer k:  1. feed-forward pathway (spikes of layer k-1 at step t):
                 I += w
              2. state updater (exact or euler): v <- decayed v
              3. integration: v = g(I + b + I_rec + l * v)   (l * v only for
                 decay_mode "direct"); then I = 0 and I_rec = 0
              4. StateMonitor of v, when requested (the state s_t)
              5. threshold: v - theta > 0 (strictly above)
              6. SpikeMonitor
              7. reset: v = 0 for the neurons that fired
              8. recurrent pathway (spikes of layer k at step t):
                 I_rec += H, used by step 3 of step t + 1
    readout:  1. feed-forward pathway, 2. decay (leaky modes), 3. u =
              l * u + I + b (leaky) or u = I + b, 4. StateMonitor of u

So the raster of layer ``k`` at step ``t`` equals the SNU output ``y_t`` of
that layer, with no shift. The input of step ``t`` is consumed in step 3
before the reset of step 7, so a reset never drops input of the same step.
After a spike the state is 0, so the next step starts from
``I + b + I_rec``, which is ``l * s * (1 - y)`` for ``y = 1``. The recurrent
input of step ``t`` comes from the spikes of step ``t - 1`` through
``I_rec``: the pathway runs after the threshold, so it never reads a stale
spike buffer.

Floating point: all values are float64. The sum ``I`` is accumulated one
synapse at a time in Brian2's order, and Brian2 may reorder the terms of the
integration statement, so states agree with a matrix product to within a few
units in the last place, and exactly when every partial sum is exactly
representable (for example dyadic weights and decays).
"""

from __future__ import annotations

import json

import brian2 as b2
import numpy as np

SLOT = "groups"
PLAN_FORMAT = "snubridge-brian2-plan"
PLAN_VERSION = 1
_INPUT_TARGETS = ("I", "I_rec")
DECAY_MODES = ("direct", "exact", "euler")
READOUT_MODES = ("per_step", "mean", "leaky", "leaky_last")


class OrderCounter:
    """Issue increasing ``order`` values for objects in the slot ``groups``."""

    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        """Return the next order value."""
        self.value += 1
        return self.value


def schedule(obj, order: OrderCounter) -> None:
    """Put a Brian2 object into the slot ``groups`` at the next order."""
    obj.when = SLOT
    obj.order = order.next()


def make_clock(dt: float) -> b2.Clock:
    """Return the clock of one network, ``dt`` in seconds."""
    return b2.Clock(dt=float(dt) * b2.second, name="snu_clock")


def dense_connectivity(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(pre, post, weight)`` of a dense kernel ``(in, out)``; zeros dropped."""
    kernel = np.asarray(kernel, dtype=np.float64)
    n_in, n_out = kernel.shape
    pre = np.repeat(np.arange(n_in, dtype=np.int64), n_out)
    post = np.tile(np.arange(n_out, dtype=np.int64), n_in)
    weight = kernel.ravel()
    keep = weight != 0
    return pre[keep], post[keep], weight[keep]


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Return the output size and leading padding of Keras ``"same"`` padding.

    TensorFlow pads ``max((out - 1) * stride + kernel - size, 0)`` in total and
    puts the odd element at the end, so the leading padding is half of it
    rounded down.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2


def conv_connectivity(
    kernel: np.ndarray,
    input_shape: tuple[int, int, int],
    strides: tuple[int, int],
    padding: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(pre, post, weight)`` of a 2-D convolution as explicit synapses.

    Neurons are numbered in C order of ``(height, width, channel)``, which is
    the order Keras ``Flatten`` uses. Output ``(oh, ow, co)`` receives input
    ``(oh * sh + i - top, ow * sw + j - left, c)`` with weight
    ``kernel[i, j, c, co]`` (cross-correlation, as in Keras); taps that fall
    into the padding have no synapse. Zero weights are dropped.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw, c_in, c_out = kernel.shape
    height, width, channels = (int(n) for n in input_shape)
    sh, sw = (int(s) for s in strides)
    if channels != c_in:
        raise ValueError(f"kernel has {c_in} input channels, the input has {channels}")
    if padding == "same":
        out_h, top = same_padding(height, kh, sh)
        out_w, left = same_padding(width, kw, sw)
    elif padding == "valid":
        out_h, out_w, top, left = (height - kh) // sh + 1, (width - kw) // sw + 1, 0, 0
    else:
        raise ValueError(f"padding must be 'same' or 'valid', received {padding!r}")
    oh, ow, ki, kj, ci, co = np.meshgrid(
        np.arange(out_h),
        np.arange(out_w),
        np.arange(kh),
        np.arange(kw),
        np.arange(c_in),
        np.arange(c_out),
        indexing="ij",
    )
    ih = oh * sh + ki - top
    iw = ow * sw + kj - left
    weight = kernel[ki, kj, ci, co]
    keep = (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width) & (weight != 0)
    pre = ((ih * width + iw) * channels + ci)[keep]
    post = ((oh * out_w + ow) * c_out + co)[keep]
    return pre.astype(np.int64), post.astype(np.int64), weight[keep]


def build_input(n_samples: int, n_inputs: int, clock: b2.Clock, order: OrderCounter):
    """Return an empty ``SpikeGeneratorGroup`` of ``n_samples * n_inputs`` neurons."""
    group = b2.SpikeGeneratorGroup(
        n_samples * n_inputs,
        np.zeros(0, dtype=np.int64),
        np.zeros(0) * b2.second,
        clock=clock,
        name="input_0",
    )
    schedule(group, order)
    return group


def input_spikes(
    raster: np.ndarray, dt: float, start_step: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return generator indices and spike times in seconds of a 0/1 raster.

    ``raster`` has shape ``(samples, steps, *input_shape)``. Input ``k`` (C
    order) of sample ``s`` is generator neuron ``s * n_inputs + k``. A spike
    at step ``t`` is emitted at time ``(start_step + t) * dt``.
    """
    samples, steps = raster.shape[:2]
    flat = raster.reshape(samples, steps, -1)
    sample, step, unit = np.nonzero(flat)
    indices = sample * flat.shape[2] + unit
    times = (step + start_step) * float(dt)
    return indices.astype(np.int64), times


def _use_generator(pre: np.ndarray, n_pre: int, n_post: int) -> bool:
    """Return whether to connect with Brian2's generator syntax.

    Only for complete blocks (no zero weight dropped) under the Cython
    runtime target, where the compiled generator was measured 3 to 4 times
    faster than index arrays for 64 copies of a 784 x 256 block. Standalone
    mode cannot read back the synapse indices that the weights need.
    """
    if len(pre) != n_pre * n_post or b2.prefs.codegen.target != "cython":
        return False
    return type(b2.get_device()).__name__ == "RuntimeDevice"


def _connect(
    pre_group,
    post_group,
    synapses_plan,
    n_samples,
    n_pre,
    n_post,
    target,
    clock,
    order,
    name,
):
    if target not in _INPUT_TARGETS:
        raise ValueError(
            f"synaptic target must be one of {_INPUT_TARGETS}, got {target!r}"
        )
    pre, post, weight = (np.asarray(a) for a in synapses_plan)
    synapses = b2.Synapses(
        pre_group,
        post_group,
        "w : 1 (constant)",
        on_pre=f"{target}_post += w",
        clock=clock,
        name=name,
    )
    n_pre, n_post = int(n_pre), int(n_post)
    if _use_generator(pre, n_pre, n_post):
        # Every pair of a sample block is connected: Brian2's compiled
        # generator builds the block-diagonal synapses without index arrays.
        synapses.connect(j=f"(i // {n_pre}) * {n_post} + k for k in range({n_post})")
        matrix = np.zeros((n_pre, n_post))
        matrix[pre, post] = weight
        created_pre = np.asarray(synapses.i[:]) % n_pre
        created_post = np.asarray(synapses.j[:]) % n_post
        synapses.w = matrix[created_pre, created_post]
    else:
        # Brian2 stores synaptic indices as int32: n_samples blocks, offset per sample.
        offsets = np.arange(n_samples, dtype=np.int32)[:, None]
        sources = offsets * np.int32(n_pre) + pre.astype(np.int32)[None, :]
        targets = offsets * np.int32(n_post) + post.astype(np.int32)[None, :]
        synapses.connect(i=sources.ravel(), j=targets.ravel())
        del sources, targets
        weights = np.asarray(weight, dtype=np.float64)
        synapses.w = np.broadcast_to(weights, (n_samples, weights.size)).ravel()
    schedule(synapses.pre, order)
    return synapses


def _decay_equation(variable: str, decay_mode: str) -> tuple[str, str]:
    """Return the equation lines and the decay term of the integration."""
    if decay_mode == "direct":
        return f"{variable} : 1\nl : 1 (shared, constant)", f"l * {variable}"
    if decay_mode in ("exact", "euler"):
        return (
            f"d{variable}/dt = -{variable} / tau : 1\ntau : second (shared, constant)",
            variable,
        )
    raise ValueError(
        f"decay_mode must be one of {DECAY_MODES}, received {decay_mode!r}"
    )


def _set_decay(group, plan: dict) -> None:
    if plan["decay_mode"] == "direct":
        group.l = float(plan["decay"])
    else:
        group.tau = float(plan["tau"]) * b2.second


def build_snu_layer(
    index: int,
    plan: dict,
    source,
    n_source: int,
    n_samples: int,
    clock: b2.Clock,
    order: OrderCounter,
    record_states: bool,
) -> dict:
    """Build one spiking SNU layer and its incoming synapses.

    Args:
        index: Layer position; objects are named ``layer_<index>...``.
        plan: ``units``, ``decay_mode``, ``decay``, ``tau`` (seconds or
            None), ``relu``, ``threshold`` and ``bias`` per unit, ``ff`` as
            ``(pre, post, weight)`` within one sample, ``rec`` likewise or
            None.
        source: Group whose spikes drive the layer.
        n_source: Source neurons per sample.
        n_samples: Independent copies.
        clock, order: Clock and order counter shared by the network.
        record_states: Add a ``StateMonitor`` of ``v``.

    Returns:
        ``group``, ``feedforward``, ``recurrent`` (or None), ``integrate``,
        ``spikes`` (SpikeMonitor), ``states`` (StateMonitor or None) and
        ``objects`` (all of them, for the ``Network``).
    """
    index = int(index)
    units = int(plan["units"])
    recurrent = plan.get("rec") is not None
    membrane, decayed = _decay_equation("v", plan["decay_mode"])
    lines = [membrane, "I : 1", "b : 1 (constant)", "theta : 1 (constant)"]
    terms = ["I", "b"]
    if recurrent:
        lines.append("I_rec : 1")
        terms.append("I_rec")
    terms.append(decayed)
    total = " + ".join(terms)
    update = f"v = clip({total}, 0, inf)" if plan["relu"] else f"v = {total}"
    clear = "\nI = 0" + ("\nI_rec = 0" if recurrent else "")
    group = b2.NeuronGroup(
        n_samples * units,
        "\n".join(lines),
        threshold="v - theta > 0",
        reset="v = 0",
        method="euler" if plan["decay_mode"] == "euler" else "exact",
        clock=clock,
        name=f"layer_{index}",
    )
    _set_decay(group, plan)
    group.b = np.tile(np.asarray(plan["bias"], dtype=np.float64), n_samples)
    group.theta = np.tile(np.asarray(plan["threshold"], dtype=np.float64), n_samples)
    feedforward = _connect(
        source,
        group,
        plan["ff"],
        n_samples,
        n_source,
        units,
        "I",
        clock,
        order,
        f"layer_{index}_ff",
    )
    schedule(group.state_updater, order)
    # Without a differential equation the state updater has no work.
    group.state_updater.active = plan["decay_mode"] != "direct"
    integrate = group.run_regularly(update + clear, name=f"layer_{index}_integrate")
    schedule(integrate, order)
    states = None
    if record_states:
        states = b2.StateMonitor(group, "v", record=True, name=f"layer_{index}_states")
        schedule(states, order)
    schedule(group.thresholder["spike"], order)
    spikes = b2.SpikeMonitor(group, name=f"layer_{index}_spikes")
    schedule(spikes, order)
    schedule(group.resetter["spike"], order)
    recurrent_synapses = None
    if recurrent:
        recurrent_synapses = _connect(
            group,
            group,
            plan["rec"],
            n_samples,
            units,
            units,
            "I_rec",
            clock,
            order,
            f"layer_{index}_rec",
        )
    objects = [group, feedforward, spikes]
    objects += [obj for obj in (states, recurrent_synapses) if obj is not None]
    return {
        "group": group,
        "feedforward": feedforward,
        "recurrent": recurrent_synapses,
        "integrate": integrate,
        "spikes": spikes,
        "states": states,
        "objects": objects,
    }


def build_readout_layer(
    index: int,
    plan: dict,
    source,
    n_source: int,
    n_samples: int,
    clock: b2.Clock,
    order: OrderCounter,
) -> dict:
    """Build a non-spiking readout: summed currents or a leaky integrator.

    ``plan`` contains ``units``, ``mode`` (one of ``READOUT_MODES``),
    ``decay_mode``, ``decay``, ``tau``, ``bias`` and ``ff``. The value ``u``
    of step ``t`` is ``I + b`` (``per_step`` and ``mean``) or
    ``l * u_{t-1} + I + b`` (``leaky`` and ``leaky_last``); a
    ``StateMonitor`` records it every step. Averaging, taking the last step
    and the readout activation are left to the caller.
    """
    index = int(index)
    units = int(plan["units"])
    mode = plan["mode"]
    if mode not in READOUT_MODES:
        raise ValueError(f"readout mode must be one of {READOUT_MODES}, got {mode!r}")
    leaky = mode in ("leaky", "leaky_last")
    if leaky:
        membrane, decayed = _decay_equation("u", plan["decay_mode"])
        update = f"u = {decayed} + (I + b)"
    else:
        membrane, update = "u : 1", "u = I + b"
    group = b2.NeuronGroup(
        n_samples * units,
        "\n".join([membrane, "I : 1", "b : 1 (constant)"]),
        method="euler" if plan["decay_mode"] == "euler" else "exact",
        clock=clock,
        name=f"layer_{index}",
    )
    if leaky:
        _set_decay(group, plan)
    group.b = np.tile(np.asarray(plan["bias"], dtype=np.float64), n_samples)
    feedforward = _connect(
        source,
        group,
        plan["ff"],
        n_samples,
        n_source,
        units,
        "I",
        clock,
        order,
        f"layer_{index}_ff",
    )
    schedule(group.state_updater, order)
    group.state_updater.active = leaky and plan["decay_mode"] != "direct"
    integrate = group.run_regularly(update + "\nI = 0", name=f"layer_{index}_integrate")
    schedule(integrate, order)
    states = b2.StateMonitor(group, "u", record=True, name=f"layer_{index}_states")
    schedule(states, order)
    return {
        "group": group,
        "feedforward": feedforward,
        "integrate": integrate,
        "states": states,
        "objects": [group, feedforward, states],
    }


def spike_raster(
    monitor, n_samples: int, units: int, steps: int, dt: float, start_step: int = 0
) -> np.ndarray:
    """Return the spikes of steps ``start_step ...`` as ``(samples, steps, units)``."""
    neuron = np.asarray(monitor.i[:], dtype=np.int64)
    step = np.rint(np.asarray(monitor.t_[:], dtype=np.float64) / dt).astype(np.int64)
    step -= start_step
    keep = (step >= 0) & (step < steps)
    raster = np.zeros((n_samples, steps, units), dtype=np.float64)
    raster[neuron[keep] // units, step[keep], neuron[keep] % units] = 1.0
    return raster


def state_trace(
    monitor, variable: str, n_samples: int, units: int, steps: int
) -> np.ndarray:
    """Return the last ``steps`` recorded values as ``(samples, steps, units)``."""
    values = np.asarray(getattr(monitor, variable)[:], dtype=np.float64)[:, -steps:]
    return values.reshape(n_samples, units, steps).transpose(0, 2, 1).copy()


def readout_value(trace: np.ndarray, mode: str) -> np.ndarray:
    """Reduce a readout trace ``(samples, steps, units)`` as ``mode`` selects."""
    if mode == "mean":
        return trace.mean(axis=1)
    if mode == "leaky_last":
        return trace[:, -1]
    return trace


def readout_activation(value: np.ndarray, activation: str) -> np.ndarray:
    """Apply ``linear``, ``softmax`` (last axis) or ``sigmoid`` to readout values."""
    if activation == "softmax":
        shifted = np.exp(value - value.max(axis=-1, keepdims=True))
        return shifted / shifted.sum(axis=-1, keepdims=True)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-value))
    if activation == "linear":
        return value
    raise ValueError(f"readout activation {activation!r} is not supported")


# Plans as flat arrays, the exported parameter file (.npz, no pickled objects).

_PLAN_SCALARS = (
    "kind",
    "name",
    "units",
    "decay_mode",
    "decay",
    "tau",
    "relu",
    "mode",
    "activation",
    "shape",
)
_PLAN_ARRAYS = ("threshold", "bias")


def plans_to_arrays(plans: list[dict], header: dict) -> dict[str, np.ndarray]:
    """Return ``plans`` and ``header`` as arrays for ``numpy.savez``.

    Numbers and strings go into a JSON document stored as a unicode array
    ``structure``; weights and index arrays are float64 and int64 arrays
    named ``layer_<index>_<field>``.
    """
    arrays: dict[str, np.ndarray] = {}
    layers = []
    for index, plan in enumerate(plans):
        layers.append({key: plan[key] for key in _PLAN_SCALARS if key in plan})
        for key in _PLAN_ARRAYS:
            if plan.get(key) is not None:
                arrays[f"layer_{index}_{key}"] = np.asarray(plan[key], dtype=np.float64)
        for key in ("ff", "rec"):
            if plan.get(key) is not None:
                pre, post, weight = plan[key]
                arrays[f"layer_{index}_{key}_pre"] = np.asarray(pre, dtype=np.int64)
                arrays[f"layer_{index}_{key}_post"] = np.asarray(post, dtype=np.int64)
                arrays[f"layer_{index}_{key}_weight"] = np.asarray(weight, np.float64)
    document = dict(header, format=PLAN_FORMAT, version=PLAN_VERSION, layers=layers)
    arrays["structure"] = np.array(json.dumps(document, sort_keys=True))
    return arrays


def plans_from_arrays(arrays) -> tuple[list[dict], dict]:
    """Read plans written by :func:`plans_to_arrays`; return ``(plans, header)``."""
    document = json.loads(str(arrays["structure"][()]))
    if document.get("format") != PLAN_FORMAT or document.get("version") != PLAN_VERSION:
        raise ValueError(
            f"not a parameter file of this script: format {document.get('format')!r}, "
            f"version {document.get('version')!r}"
        )
    plans = []
    for index, entry in enumerate(document.pop("layers")):
        plan = dict(entry)
        for key in _PLAN_ARRAYS:
            name = f"layer_{index}_{key}"
            if name in arrays:
                plan[key] = np.asarray(arrays[name], dtype=np.float64)
        for key in ("ff", "rec"):
            name = f"layer_{index}_{key}_pre"
            plan[key] = None
            if name in arrays:
                plan[key] = (
                    np.asarray(arrays[name], dtype=np.int64),
                    np.asarray(arrays[f"layer_{index}_{key}_post"], dtype=np.int64),
                    np.asarray(arrays[f"layer_{index}_{key}_weight"], dtype=np.float64),
                )
        plans.append(plan)
    return plans, document
