"""Memory model of a mixed-precision search: FLASH (M1) and RAM (M2) under a BitPolicy.

``memory(model, policy)`` is the reference: it asks ``analysis.model_statistics`` for the
deployed weight bytes (M1) and peak live activation bytes (M2). A search evaluates thousands
of policies, so ``MemoryModel`` reads the same deployed-operator view once and keeps M1 and
M2 as linear forms over the decision variables:

- a weight variable per weight layer (its ``weight_bits``), with M1 additive over them;
- an activation variable per policy key that sets the bits of at least one deployed tensor
  (an input layer, a conv/dense/add output, a fused ReLU); tensors tied to their input
  (pooling) follow their input's variable; tensors at model outputs stay at the policy's
  ``output_bits``;
- M2 = max over operators of the bytes of the tensors live while the operator runs.

Which policy key sets which tensor is found by probing the quantized graph rather than by
re-implementing the wrapping rules: two or three builds under policies that give every layer a
distinct base-7 code of bit widths 2..8 identify the controller of every tensor. The linear
forms are checked against ``model_statistics`` on those builds, so they cannot drift from the
analysis module.
"""
import os
from dataclasses import dataclass, field

import numpy as np

from tfq_tiny._compat import keras
from tfq_tiny.analysis import model_statistics, op_graph
from tfq_tiny.analysis.ops import FLOAT_BITS
from tfq_tiny.analysis.stats import BIAS_BYTES, SCALE_BYTES
from tfq_tiny.errors import TfqError
from tfq_tiny.quantization.configs import is_depthwise
from tfq_tiny.quantization.policy import BitPolicy

BIT_CHOICES = (2, 4, 8)
WEIGHT = "weight"
ACTIVATION = "activation"
_PROBE_DIGITS = 7  # widths 8 (digit 0) and 2..7 (digits 1..6)


class InfeasibleBudgetError(TfqError):
    """A FLASH/RAM budget that no policy over the allowed bit widths can meet."""

    def __init__(self, message, min_flash, min_ram, flash=None, ram=None):
        super().__init__(message)
        self.min_flash = min_flash
        self.min_ram = min_ram
        self.flash = flash
        self.ram = ram


def memory(model, policy):
    """(M1 FLASH bytes, M2 RAM bytes) of a float ``model`` under ``policy`` (or of a quantized
    model when ``policy`` is None), straight from ``analysis.model_statistics``."""
    stats = model_statistics(model, None if policy is None else BitPolicy.parse(policy))
    return stats.weight_bytes, stats.peak_activation_bytes


def uniform_budget(model, weight_bits=4, activation_bits=4):
    """The (FLASH, RAM) of the uniform policy, the default budget of a search."""
    return memory(model, BitPolicy.uniform(weight_bits, activation_bits))


def _packed(elements, bits):
    return -(-elements * bits // 8)


@dataclass(frozen=True)
class Variable:
    """One decision: the weight or activation bits of policy key ``layer``.

    ``tensors`` are the deployed tensors it sets (activation variables) and ``op`` the
    deployed operator it belongs to; ``info`` holds the layer description a search agent sees.
    """

    kind: str
    layer: str
    op: str
    tensors: tuple = ()
    info: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self):
        return (self.kind, self.layer)

    def __str__(self):
        return f"{self.layer}:{'W' if self.kind == WEIGHT else 'A'}"


def _layer_info(op, tensors):
    layer = op.layer
    in_shape = tensors[op.inputs[0]].shape
    out_shape = tensors[op.output].shape
    if is_depthwise(layer):
        kind = "depthwise"
    elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)):
        kind = "conv"
    elif isinstance(layer, keras.layers.Dense):
        kind = "dense"
    else:
        kind = "other"
    kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None) or (1,)
    strides = getattr(layer, "strides", None) or (1,)
    params = (int(np.prod(op.kernel_shape)) if op.kernel_shape else 0) + op.bias_size
    return {"type": kind, "in_channels": int(in_shape[-1]) if in_shape else 1,
            "out_channels": int(out_shape[-1]) if out_shape else 1,
            "kernel": int(np.prod(kernel)), "stride": int(np.prod(strides)),
            "params": params, "feature_map": int(np.prod(in_shape[:-1] or (1,)))}


class MemoryModel:
    """M1/M2 of a model as exact linear forms over the per-tensor bit choices.

    Args:
      model: a float tf_keras model (taken as deployed, ``preprocess.as_deployed``, as
        ``model_statistics`` does).
      base_policy: bits of everything not searched (the logits' ``output_bits``).
      keep_residual_8bit: fix the activation variables of every Add input and output at 8 bits.
      choices: the bit widths a variable may take (deployable: 2, 4, 8).
    """

    def __init__(self, model, base_policy=None, keep_residual_8bit=False, choices=BIT_CHOICES):
        from tfq_tiny.graph import Graph
        from tfq_tiny.preprocess import as_deployed
        from tfq_tiny.quantization.quantize import build_quantized_model, takes_output_bits

        self.base_policy = BitPolicy.uniform() if base_policy is None else BitPolicy.parse(
            base_policy)
        self.choices = tuple(sorted(set(int(b) for b in choices)))
        self.keep_residual_8bit = bool(keep_residual_8bit)
        folded = as_deployed(model)
        names = [layer.name for layer in folded.layers]
        codes = {name: i + 1 for i, name in enumerate(names)}
        n_probes = 1
        while _PROBE_DIGITS ** n_probes <= len(names):
            n_probes += 1
        probes = []
        for j in range(n_probes):
            overrides = {}
            for name, code in codes.items():
                digit = (code // _PROBE_DIGITS ** j) % _PROBE_DIGITS
                if digit:
                    overrides[name] = {"weight_bits": digit + 1, "activation_bits": digit + 1}
            policy = BitPolicy(8, 8, overrides, 8)
            qmodel = build_quantized_model(folded, policy, check_overrides=False)
            probes.append((policy, qmodel, op_graph(qmodel)))
        graph = Graph(folded)
        self._build(probes, names, {name for name in names if takes_output_bits(graph, name)})
        for policy, qmodel, _ in probes:
            self._verify(qmodel, policy)

    def _decode(self, values, names):
        code = sum((0 if v == 8 else v - 1) * _PROBE_DIGITS ** j for j, v in enumerate(values))
        return names[code - 1] if code else None

    def _build(self, probes, names, at_output_bits):
        """``at_output_bits``: layers whose output tensor takes ``output_bits`` (not searched)."""
        ops, tensors, outputs = probes[0][2]
        self.ops = [op.name for op in ops]
        self.op_types = [op.type for op in ops]
        self.op_inputs = [list(op.inputs) for op in ops]
        self.tensor_elements = {name: t.elements for name, t in tensors.items()}
        self.outputs = list(outputs)
        weight_vars, act_layers = [], {}
        self._fixed_tensor_bits = {}
        self._tensor_var = {}
        producer = {op.output: op for op in ops}
        input_names = [n for n in tensors if n not in producer]
        for name in tensors:
            values = [probe[2][1][name].bits for probe in probes]
            controller = self._decode(values, names)
            if controller is None or controller in at_output_bits:
                base = tensors[name].bits
                if controller is not None:
                    base = self.base_policy.activation_bits_for(controller, True)
                    base = FLOAT_BITS if base is None else base
                self._fixed_tensor_bits[name] = base
            else:
                act_layers.setdefault(controller, []).append(name)
        for i, op in enumerate(ops):
            if op.kernel_shape is None:
                continue
            controller = self._decode([probe[2][0][i].weight_bits for probe in probes], names)
            if controller is None:
                raise TfqError(f"Cannot tell which policy key sets the weight bits of '{op.name}'.")
            weight_vars.append((controller, op))
        residual = set()
        if self.keep_residual_8bit:
            for op in ops:
                if isinstance(op.layer, keras.layers.Add):
                    residual.update(op.inputs + [op.output])
        self.variables = []
        self.fixed = {}
        self._weight_bytes = {}
        order = {name: -1 for name in input_names}
        order.update({op.output: i for i, op in enumerate(ops)})
        acts = sorted(act_layers.items(), key=lambda kv: min(order[t] for t in kv[1]))
        act_by_op = {}
        for layer, names_ in acts:
            first = min(names_, key=lambda t: order[t])
            op = producer.get(first)
            info = _layer_info(op, tensors) if op is not None else {
                "type": "input", "in_channels": int(tensors[first].shape[-1]),
                "out_channels": int(tensors[first].shape[-1]), "kernel": 1, "stride": 1,
                "params": 0, "feature_map": int(np.prod(tensors[first].shape[:-1] or (1,)))}
            var = Variable(ACTIVATION, layer, op.name if op is not None else layer,
                           tuple(sorted(names_, key=lambda t: order[t])), info)
            act_by_op.setdefault(order[first], []).append(var)
            for t in names_:
                self._tensor_var[t] = var.key
            if residual.intersection(names_):
                self.fixed[var.key] = 8
        self.variables.extend(act_by_op.get(-1, []))
        weight_of = {op.name: (layer, op) for layer, op in weight_vars}
        for i, op in enumerate(ops):
            if op.name in weight_of:
                layer, _ = weight_of[op.name]
                var = Variable(WEIGHT, layer, op.name, (), _layer_info(op, tensors))
                kernel = int(np.prod(op.kernel_shape))
                extra = op.bias_size * BIAS_BYTES + op.channels * SCALE_BYTES
                self._weight_bytes[var.key] = (kernel, extra)
                self.variables.append(var)
            self.variables.extend(act_by_op.get(i, []))
        self.by_key = {v.key: v for v in self.variables}
        first_use = {name: -1 for name in input_names}
        last_use = {name: len(ops) for name in outputs}
        for i, op in enumerate(ops):
            first_use.setdefault(op.output, i)
            for name in op.inputs:
                last_use[name] = max(last_use.get(name, i), i)
        self.live = [[name for name in tensors
                      if first_use.get(name, len(ops)) <= i <= last_use.get(name, -1)]
                     for i in range(len(ops))]

    def _verify(self, qmodel, policy):
        stats = model_statistics(qmodel)
        ops, tensors, _ = op_graph(qmodel)
        assignment = self.assignment(policy, apply_fixed=False)
        observed = {t: tensors[t].bits for t in self._fixed_tensor_bits}
        mine = self.op_live_bytes(assignment, observed)
        theirs = [s.live_activation_bytes for s in stats.ops]
        flash = self.flash(assignment)
        if mine != theirs or flash != stats.weight_bytes:
            raise RuntimeError(
                "tfq_tiny.search.MemoryModel disagrees with analysis.model_statistics "
                f"(live bytes {mine} vs {theirs}, FLASH {flash} vs {stats.weight_bytes}); the "
                "deployed-operator view changed and the search memory model must follow it.")

    @property
    def weight_variables(self):
        return [v for v in self.variables if v.kind == WEIGHT]

    @property
    def activation_variables(self):
        return [v for v in self.variables if v.kind == ACTIVATION]

    def searchable(self, kinds=(WEIGHT, ACTIVATION)):
        """Variables of the given kinds that are not fixed."""
        return [v for v in self.variables if v.kind in kinds and v.key not in self.fixed]

    def assignment(self, policy=None, apply_fixed=True):
        """{variable key: bits} that ``policy`` (default: the base policy) gives each variable."""
        policy = self.base_policy if policy is None else BitPolicy.parse(policy)
        result = {}
        for v in self.variables:
            if apply_fixed and v.key in self.fixed:
                bits = self.fixed[v.key]
            elif v.kind == WEIGHT:
                bits = policy.weight_bits_for(v.layer)
            else:
                bits = policy.activation_bits_for(v.layer)
                bits = FLOAT_BITS if bits is None else bits
            result[v.key] = bits
        return result

    def policy(self, assignment):
        """The BitPolicy (defaults of the base policy, one override per differing variable)."""
        base = self.base_policy
        policy = base
        for v in self.variables:
            bits = assignment.get(v.key, self.fixed.get(v.key))
            if bits is None:
                continue
            if v.kind == WEIGHT and bits != base.weight_bits_for(v.layer):
                policy = policy.with_override(v.layer, weight_bits=int(bits))
            elif v.kind == ACTIVATION and bits != base.activation_bits_for(v.layer):
                policy = policy.with_override(v.layer, activation_bits=int(bits))
        return policy

    def weight_bytes(self, key, bits):
        kernel, extra = self._weight_bytes[key]
        return _packed(kernel, bits) + extra

    def tensor_bytes(self, tensor, bits):
        return _packed(self.tensor_elements[tensor], bits)

    def tensor_bits(self, assignment, tensor, fixed_bits=None):
        if tensor in self._fixed_tensor_bits:
            return (fixed_bits or self._fixed_tensor_bits)[tensor]
        return assignment[self._tensor_var[tensor]]

    def tensor_variable(self, tensor):
        """The key of the variable setting ``tensor``'s bits, or None when it is fixed."""
        return self._tensor_var.get(tensor)

    def flash(self, assignment):
        """M1: packed kernels + int32 biases + float32 per-channel scales."""
        return sum(self.weight_bytes(v.key, assignment[v.key]) for v in self.weight_variables)

    def op_live_bytes(self, assignment, fixed_bits=None):
        """Bytes live during each operator (inputs, output and skip tensors, packed)."""
        return [sum(self.tensor_bytes(t, self.tensor_bits(assignment, t, fixed_bits))
                    for t in live)
                for live in self.live]

    def ram(self, assignment):
        """M2: the largest live set over operators."""
        return max(self.op_live_bytes(assignment), default=0)

    def memory(self, assignment):
        return self.flash(assignment), self.ram(assignment)

    def lowest(self, assignment=None, kinds=(WEIGHT, ACTIVATION)):
        """``assignment`` with every searchable variable of ``kinds`` at the smallest width."""
        result = dict(self.assignment() if assignment is None else assignment)
        for v in self.searchable(kinds):
            result[v.key] = self.choices[0]
        return result

    def minimum(self):
        """(smallest FLASH, smallest RAM) reachable: every searchable variable at the lowest
        width, fixed ones at their bits."""
        return self.memory(self.lowest())

    def _step_down(self, bits):
        lower = [b for b in self.choices if b < bits]
        return lower[-1] if lower else None

    def enforce(self, assignment, flash=None, ram=None, frozen=()):
        """HAQ-for-MCU's constraint rule: returns a copy of ``assignment`` that fits.

        While M1 > flash, the weight variable with the most bytes that can still go lower
        steps down one width (8 -> 4 -> 2). While M2 > ram, among the tensors live at the
        operator with the largest live memory, the largest one that can still go lower steps
        its variable down one width. Variables in ``frozen`` (keys) and fixed ones never move.
        Raises InfeasibleBudgetError when nothing is left to lower.
        """
        result = dict(assignment)
        frozen = set(frozen) | set(self.fixed)
        while flash is not None and self.flash(result) > flash:
            candidates = [v.key for v in self.weight_variables
                          if v.key not in frozen and self._step_down(result[v.key])]
            if not candidates:
                self._raise(flash, ram, "FLASH")
            key = max(candidates, key=lambda k: self.weight_bytes(k, result[k]))
            result[key] = self._step_down(result[key])
        while ram is not None:
            live_bytes = self.op_live_bytes(result)
            peak = int(np.argmax(live_bytes)) if live_bytes else 0
            if not live_bytes or live_bytes[peak] <= ram:
                break
            tensors = [t for t in self.live[peak] if self.tensor_variable(t) is not None
                       and self.tensor_variable(t) not in frozen
                       and self._step_down(result[self.tensor_variable(t)])]
            if not tensors:
                self._raise(flash, ram, "RAM")
            tensor = max(tensors, key=lambda t: self.tensor_bytes(t, self.tensor_bits(result, t)))
            key = self.tensor_variable(tensor)
            result[key] = self._step_down(result[key])
        return result

    def _raise(self, flash, ram, which):
        min_flash, min_ram = self.minimum()
        raise InfeasibleBudgetError(
            f"No policy over bit widths {list(self.choices)} fits the budget "
            f"(FLASH {_fmt(flash)}, RAM {_fmt(ram)}; {which} cannot be met with the variables "
            f"left to lower). The smallest reachable are FLASH {min_flash:,} B and RAM "
            f"{min_ram:,} B (every searchable tensor at {self.choices[0]} bits"
            f"{', residual tensors at 8' if self.keep_residual_8bit else ''}). Raise the budget "
            "or allow more tensors to be lowered.", min_flash, min_ram, flash, ram)

    def check_feasible(self, flash=None, ram=None):
        """Raise InfeasibleBudgetError unless the lowest policy fits both budgets."""
        min_flash, min_ram = self.minimum()
        if (flash is not None and min_flash > flash) or (ram is not None and min_ram > ram):
            self._raise(flash, ram, "FLASH" if flash is not None and min_flash > flash
                        else "RAM")
        return min_flash, min_ram

    def describe(self, assignment):
        """One line per variable: name, bits, bytes (weights) — for logs and reports."""
        lines = []
        for v in self.variables:
            bits = assignment[v.key]
            extra = f" {self.weight_bytes(v.key, bits):,} B" if v.kind == WEIGHT else ""
            lines.append(f"{str(v):<28}{bits:>3}{extra}")
        return "\n".join(lines)


def _fmt(value):
    return "unbounded" if value is None else f"{int(value):,} B"


def check_feasible(model, flash=None, ram=None, **memory_model_kw):
    """(min FLASH, min RAM) of ``model``; raises InfeasibleBudgetError (with both numbers) when
    even every searchable tensor at the lowest width misses ``flash`` or ``ram`` (bytes)."""
    mm = model if isinstance(model, MemoryModel) else MemoryModel(model, **memory_model_kw)
    return mm.check_feasible(flash, ram)


def tflm_arena_usage(model_bytes, arena_size=None):
    """TFLM's own arena accounting of a flatbuffer, from the pip interpreter's allocation
    recorder: {"total", "head", "tail"} bytes plus the per-kind lines it printed.

    ``head`` is the planned non-persistent area (activations and scratch buffers, 16-byte
    aligned, laid out by TFLM's greedy planner), the number to compare with M2; ``tail`` holds
    what lives for the interpreter's lifetime (tensor structs, quantization parameters, op
    data, node/registration structs). The interpreter prints through C stdio, so the report
    is read back from file descriptors 1 and 2. The default ``arena_size`` is twice our plan
    of the head (``export.arena.plan_arena``) plus 20 bytes per flatbuffer byte for the tail,
    so models with large activations get an arena they fit in.
    """
    import re
    import sys
    import tempfile

    from tflite_micro.python.tflite_micro import runtime

    if arena_size is None:
        from tfq_tiny.export.arena import plan_arena

        arena_size = max(64 * 1024, 2 * plan_arena(model_bytes)["head"] + 20 * len(model_bytes))

    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with tempfile.TemporaryFile() as capture:
        try:
            for fd in saved:
                os.dup2(capture.fileno(), fd)
            interpreter = runtime.Interpreter.from_bytes(
                bytes(model_bytes), arena_size=arena_size)
            interpreter.print_allocations()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    usage = {"lines": [line for line in text.splitlines() if "RecordingMicroAllocator" in line]}
    for key in ("total", "head", "tail"):
        match = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        usage[key] = int(match.group(1)) if match else None
    return usage
