"""Sequence layers with hand-written backward passes: a GRU and an LSTM through time,
causal multi-head attention, and attention with a finite padding mask."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._model import model, normal, softmax


def _sigmoid(a):
    return 1 / (1 + jnp.exp(-a))


# ---------------------------------------------------------------- GRU through time

GRU_T, GRU_IN, GRU_H = 3, 2, 3


def gru_init(key, dtype):
    k = jax.random.split(key, 12)
    params = {}
    for j, g in enumerate("zrn"):
        params["W" + g] = normal(k[3 * j], (GRU_IN, GRU_H), dtype, 0.6)
        params["U" + g] = normal(k[3 * j + 1], (GRU_H, GRU_H), dtype, 0.6)
        params["b" + g] = normal(k[3 * j + 2], (GRU_H,), dtype, 0.1)
    xs, h0, cs = (
        normal(k[9], (GRU_T, 2, GRU_IN), dtype),
        normal(k[10], (2, GRU_H), dtype, 0.5),
        normal(k[11], (GRU_T, 2, GRU_H), dtype),
    )
    return params, (xs, h0, cs)


def _gru_step(p, x, h):
    z = _sigmoid(x @ p["Wz"] + h @ p["Uz"] + p["bz"][None])
    r = _sigmoid(x @ p["Wr"] + h @ p["Ur"] + p["br"][None])
    n = jnp.tanh(x @ p["Wn"] + (r * h) @ p["Un"] + p["bn"][None])
    return (1 - z) * n + z * h, (z, r, n)


def gru_loss(p, xs, h0, cs):
    h, total = h0, 0.0
    for t in range(xs.shape[0]):
        h, _ = _gru_step(p, xs[t], h)
        total = total + jnp.sum(cs[t] * h)
    return total


def gru_grad(p, xs, h0, cs, bug=None):
    hs, gates = [h0], []
    for t in range(xs.shape[0]):
        h, gate = _gru_step(p, xs[t], hs[-1])
        hs.append(h)
        gates.append(gate)
    g = {k: jnp.zeros_like(v) for k, v in p.items()}
    dh_next = jnp.zeros_like(h0)
    for t in reversed(range(xs.shape[0])):
        x, h, (z, r, n) = xs[t], hs[t], gates[t]
        dh = cs[t] + dh_next
        dn = dh * (1 - z)
        dz = dh * (n - h) if bug == "update_gate_sign" else dh * (h - n)
        dh_prev = dh * z
        dan = dn * (1 - n**2)
        drh = dan @ p["Un"].T
        dar = drh * h * r * (1 - r)
        daz = dz * z * (1 - z)
        for gname, da in (("z", daz), ("r", dar), ("n", dan)):
            g["W" + gname] = g["W" + gname] + x.T @ da
            g["b" + gname] = g["b" + gname] + da.sum(0)
        g["Uz"] = g["Uz"] + h.T @ daz
        g["Ur"] = g["Ur"] + h.T @ dar
        g["Un"] = g["Un"] + (h if bug == "Un_uses_h_not_rh" else r * h).T @ dan
        dh_prev = dh_prev + daz @ p["Uz"].T + dar @ p["Ur"].T
        if bug != "reset_path_dropped":  # the path h -> r*h -> n
            dh_prev = dh_prev + drh * r
        dh_next = dh_prev
    return g


GRU = model(
    "gru_bptt",
    gru_init,
    gru_loss,
    gru_grad,
    {"update_gate_sign": ("['Wz']", "gross"), "Un_uses_h_not_rh": ("['Un']", "gross"), "reset_path_dropped": ("['Wz']", "gross")},
)

# ---------------------------------------------------------------- LSTM through time (forget-gate bias +1 in the forward)

LSTM_T, LSTM_IN, LSTM_H = 3, 2, 2
FORGET_BIAS = 1.0


def lstm_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {"W": normal(k[0], (LSTM_IN + LSTM_H, 4 * LSTM_H), dtype, 0.6), "b": normal(k[1], (4 * LSTM_H,), dtype, 0.1)}
    return params, (normal(k[2], (LSTM_T, 2, LSTM_IN), dtype), normal(k[3], (LSTM_T, 2, LSTM_H), dtype))


def _lstm_gates(p, x, h, forget_bias=FORGET_BIAS):
    a = jnp.concatenate([x, h], axis=1) @ p["W"] + p["b"][None]
    ai, af, ag, ao = jnp.split(a, 4, axis=1)
    return _sigmoid(ai), _sigmoid(af + forget_bias), jnp.tanh(ag), _sigmoid(ao)


def lstm_loss(p, xs, cs):
    h = c = jnp.zeros((xs.shape[1], LSTM_H), xs.dtype)
    total = 0.0
    for t in range(xs.shape[0]):
        i, f, g, o = _lstm_gates(p, xs[t], h)
        c = f * c + i * g
        h = o * jnp.tanh(c)
        total = total + jnp.sum(cs[t] * h)
    return total


def lstm_grad(p, xs, cs, bug=None):
    h = c = jnp.zeros((xs.shape[1], LSTM_H), xs.dtype)
    hs, cells, gates = [h], [c], []
    for t in range(xs.shape[0]):
        i, f, g, o = _lstm_gates(p, xs[t], hs[-1])
        cells.append(f * cells[-1] + i * g)
        hs.append(o * jnp.tanh(cells[-1]))
        gates.append((i, f, g, o))
    dW, db = jnp.zeros_like(p["W"]), jnp.zeros_like(p["b"])
    dh_next = dc_next = jnp.zeros_like(h)
    for t in reversed(range(xs.shape[0])):
        i, f, g, o = gates[t]
        if bug == "forget_bias_dropped_backward":  # the backward recomputes f without the +1
            f = _lstm_gates(p, xs[t], hs[t], forget_bias=0.0)[1]
        tc = jnp.tanh(cells[t + 1])
        dh = cs[t] + dh_next
        dc = dc_next + (dh * o if bug == "tanh_c_derivative_missing" else dh * o * (1 - tc**2))
        da = jnp.concatenate(
            [dc * g * i * (1 - i), dc * cells[t] * f * (1 - f), dc * i * (1 - g**2), dh * tc * o * (1 - o)], axis=1
        )
        dW = dW + jnp.concatenate([xs[t], hs[t]], axis=1).T @ da
        db = db + da.sum(0)
        dh_next = da @ p["W"][LSTM_IN:].T
        dc_next = jnp.zeros_like(dc) if bug == "cell_grad_not_carried" else dc * f
    return {"W": dW, "b": db}


LSTM = model(
    "lstm_bptt",
    lstm_init,
    lstm_loss,
    lstm_grad,
    {
        "cell_grad_not_carried": ("['W']", "gross"),
        "forget_bias_dropped_backward": ("['W']", "gross"),
        "tanh_c_derivative_missing": ("['W']", "gross"),
    },
)

# ---------------------------------------------------------------- causal multi-head self-attention

T_SEQ, D_MODEL, HEADS = 3, 4, 2
D_HEAD = D_MODEL // HEADS


def mha_init(key, dtype):
    k = jax.random.split(key, 6)
    params = {name: normal(k[i], (D_MODEL, D_MODEL), dtype, 0.6) for i, name in enumerate(("Wq", "Wk", "Wv", "Wo"))}
    return params, (normal(k[4], (T_SEQ, D_MODEL), dtype), normal(k[5], (T_SEQ, D_MODEL), dtype))


def _causal():
    return jnp.tril(jnp.ones((T_SEQ, T_SEQ), bool))


def _heads(M):
    """(T, D_MODEL) -> (HEADS, T, D_HEAD): head h is columns h*D_HEAD ... (h+1)*D_HEAD - 1."""
    return jnp.transpose(M.reshape(T_SEQ, HEADS, D_HEAD), (1, 0, 2))


def _merge(M):
    return jnp.transpose(M, (1, 0, 2)).reshape(T_SEQ, D_MODEL)


def _mha_probs(Q, K, scale, mask=True):
    S = jnp.einsum("htd,hsd->hts", Q, K) * scale
    return softmax(jnp.where(_causal()[None], S, -1e9) if mask else S)


def mha_loss(p, X, C):
    Q, K, V = (_heads(X @ p[w]) for w in ("Wq", "Wk", "Wv"))
    A = _mha_probs(Q, K, 1 / jnp.sqrt(D_HEAD).astype(X.dtype))
    return jnp.sum(C * (_merge(A @ V) @ p["Wo"]))


def mha_grad(p, X, C, bug=None):
    scale = 1 / jnp.sqrt(D_HEAD).astype(X.dtype)
    Q, K, V = (_heads(X @ p[w]) for w in ("Wq", "Wk", "Wv"))
    A = _mha_probs(Q, K, scale)
    out = _merge(A @ V)
    dO = _heads(C @ p["Wo"].T)
    if bug == "heads_interleaved":  # the backward splits the heads as every HEADS-th column
        dO = jnp.transpose((C @ p["Wo"].T).reshape(T_SEQ, D_HEAD, HEADS), (2, 0, 1))
    if bug == "mask_ignored_backward":  # the backward recomputes the probabilities without the mask
        A = _mha_probs(Q, K, scale, mask=False)
    dV = jnp.einsum("hts,htd->hsd", A, dO)
    dA = jnp.einsum("htd,hsd->hts", dO, V)
    dS = A * (dA - jnp.sum(dA * A, axis=-1, keepdims=True))
    s_back = scale / (1 + 1e-4) if bug == "temperature_off_1e-4" else scale
    dQ = jnp.einsum("hts,hsd->htd", dS, K) * s_back
    dK = jnp.einsum("hts,htd->hsd", dS, Q) * s_back
    dWo = out.T @ C
    return {
        "Wq": X.T @ _merge(dQ),
        "Wk": X.T @ _merge(dK),
        "Wv": X.T @ _merge(dV),
        "Wo": dWo.T if bug == "Wo_transposed" else dWo,
    }


MHA = model(
    "mha_causal",
    mha_init,
    mha_loss,
    mha_grad,
    {
        "mask_ignored_backward": ("['Wq']", "gross"),
        "temperature_off_1e-4": ("['Wq']", "subtle"),
        "heads_interleaved": ("['Wv']", "gross"),
        "Wo_transposed": ("['Wo']", "gross"),
    },
)

# ---------------------------------------------------------------- attention with a finite padding mask

PAD_FILL = -10.0  # added to the scores of padded keys: their probability is ~e^-10, not 0


def padded_init(key, dtype):
    k = jax.random.split(key, 5)
    params = {name: normal(k[i], (3, 3), dtype, 0.6) for i, name in enumerate(("Wq", "Wk", "Wv"))}
    valid = jnp.array([True, True, True, False])  # the last position is padding
    return params, (normal(k[3], (4, 3), dtype), valid, normal(k[4], (4, 3), dtype))


def _padded_probs(p, X, valid):
    S = (X @ p["Wq"]) @ (X @ p["Wk"]).T / jnp.sqrt(3.0).astype(X.dtype)
    return softmax(S + jnp.where(valid, 0.0, PAD_FILL).astype(X.dtype)[None])


def padded_loss(p, X, valid, C):
    return jnp.sum(C * (_padded_probs(p, X, valid) @ (X @ p["Wv"])))


def padded_grad(p, X, valid, C, bug=None):
    s = 1 / jnp.sqrt(3.0).astype(X.dtype)
    A = _padded_probs(p, X, valid)
    if bug == "mask_leak_ignored":  # the backward treats padded keys as having probability exactly 0
        A = A * valid[None]
        A = A / A.sum(-1, keepdims=True)
    V = X @ p["Wv"]
    dA = C @ V.T
    dS = A * dA if bug == "softmax_jacobian_diagonal" else A * (dA - jnp.sum(dA * A, axis=-1, keepdims=True))
    return {"Wq": X.T @ (dS @ (X @ p["Wk"])) * s, "Wk": X.T @ (dS.T @ (X @ p["Wq"])) * s, "Wv": X.T @ (A.T @ C)}


PADDED_ATTENTION = model(
    "attention_padding_mask",
    padded_init,
    padded_loss,
    padded_grad,
    {"mask_leak_ignored": ("['Wq']", "subtle"), "softmax_jacobian_diagonal": ("['Wq']", "gross")},
)

SEQUENCE = [GRU, LSTM, MHA, PADDED_ATTENTION]
