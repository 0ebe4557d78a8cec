"""``with_edge_bits``: hold a model's sensitive edge tensors at 8 bits under a low-bit policy.

The PTQ literature's W4A4 is not every tensor at 4 bits. BRECQ's and QDrop's simulation (and the
empirical study's numbers, which come from such a framework) leave the network input
unquantized, keep the first and last weight layers at 8 bits (and the last layer's input), and
never quantize the two branch outputs that meet in a residual Add (the conv outputs before the
sum). A deployed integer model has no float tensors, so the closest deployable policy keeps those
tensors at 8 bits; this module builds it from any policy and model, so a W4A4 row can be compared
with the papers' on equal terms and a user can buy back accuracy at a known memory cost.
"""
from tfq_tiny.quantization.grid import check_bits
from tfq_tiny.quantization.policy import BitPolicy

EDGES = ("input", "first_last", "residual")


def edge_tensors(model, edges=EDGES):
    """{policy key: "weight_bits" | "activation_bits"} for the edge tensors of ``model``.

    ``edges`` picks from: "input" (the model inputs), "first_last" (the first and last weight
    layers' weights and the last one's input activation) and "residual" (every tensor whose
    only consumers are Adds: the branch outputs before a residual sum).
    """
    from tfq_tiny.search.memory import MemoryModel

    edges = (edges,) if isinstance(edges, str) else tuple(edges)
    unknown = set(edges) - set(EDGES)
    if unknown:
        raise ValueError(f"Unknown edges {sorted(unknown)}; choose from {list(EDGES)}.")
    mm = MemoryModel(model)
    keys = {}

    def hold(layer, kind):
        keys.setdefault(layer, set()).add(kind)

    def hold_tensor(tensor):
        key = mm.tensor_variable(tensor)
        if key is not None:
            hold(key[1], "activation_bits")

    if "input" in edges:
        for v in mm.activation_variables:
            if v.info.get("type") == "input":
                hold(v.layer, "activation_bits")
    weights = mm.weight_variables
    if "first_last" in edges and weights:
        hold(weights[0].layer, "weight_bits")
        hold(weights[-1].layer, "weight_bits")
        hold_tensor(mm.op_inputs[mm.ops.index(weights[-1].op)][0])
    if "residual" in edges:
        consumers = {}
        for op_type, inputs in zip(mm.op_types, mm.op_inputs):
            for tensor in inputs:
                consumers.setdefault(tensor, []).append(op_type)
        for tensor, types in consumers.items():
            if all(t == "Add" for t in types):
                hold_tensor(tensor)
    return {layer: sorted(kinds) for layer, kinds in keys.items()}


def with_edge_bits(policy, model, bits=8, edges=EDGES):
    """``policy`` with the edge tensors of ``model`` (``edge_tensors``) at ``bits``, or at the
    policy's own width where that is wider; the rest of the policy is unchanged."""
    bits = check_bits(bits, "edge bits")
    policy = BitPolicy.parse(policy)
    for layer, kinds in edge_tensors(model, edges).items():
        changes = {}
        if "weight_bits" in kinds and policy.weight_bits_for(layer) < bits:
            changes["weight_bits"] = bits
        current = policy.activation_bits_for(layer)
        if "activation_bits" in kinds and current is not None and current < bits:
            changes["activation_bits"] = bits
        if changes:
            policy = policy.with_override(layer, **changes)
    return policy
