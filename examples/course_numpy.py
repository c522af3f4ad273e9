"""The course's own NumPy gradient-checking exercise, checked as it is: no JAX rewrite.

`forward_propagation_n(X, Y, parameters) -> (cost, cache)` and `backward_propagation_n(X, Y,
cache) -> gradients` (a dict with dW1, db1, … and the intermediates dZ1, dA1, …) are the
course's functions, in plain NumPy. `jgc.course` checks them in one call: the NumPy forward
pass runs on the host (through jax.pure_callback), the cost is checked, the cache of the same
point goes to the backward pass, and the gradients are matched to W1, b1, … by name.

It runs once on the correct backward pass and once with the course's two planted bugs (dW2
twice too large, db1 four times), and asserts both outcomes.

    python examples/course_numpy.py
"""

import numpy as np

import jgc


def relu(x):
    return np.maximum(0, x)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gradient_check_n_test_case():
    np.random.seed(1)
    x = np.random.randn(4, 3)
    y = np.array([1, 1, 0])
    W1 = np.random.randn(5, 4)
    b1 = np.random.randn(5, 1)
    W2 = np.random.randn(3, 5)
    b2 = np.random.randn(3, 1)
    W3 = np.random.randn(1, 3)
    b3 = np.random.randn(1, 1)
    parameters = {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "W3": W3, "b3": b3}
    return x, y, parameters


def forward_propagation_n(X, Y, parameters):
    m = X.shape[1]
    W1 = parameters["W1"]
    b1 = parameters["b1"]
    W2 = parameters["W2"]
    b2 = parameters["b2"]
    W3 = parameters["W3"]
    b3 = parameters["b3"]

    # LINEAR -> RELU -> LINEAR -> RELU -> LINEAR -> SIGMOID
    Z1 = np.dot(W1, X) + b1
    A1 = relu(Z1)
    Z2 = np.dot(W2, A1) + b2
    A2 = relu(Z2)
    Z3 = np.dot(W3, A2) + b3
    A3 = sigmoid(Z3)

    # Cost
    logprobs = np.multiply(-np.log(A3), Y) + np.multiply(-np.log(1 - A3), 1 - Y)
    cost = 1.0 / m * np.sum(logprobs)

    cache = (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3)
    return cost, cache


def backward_propagation_n(X, Y, cache, planted_bugs=False):
    m = X.shape[1]
    (Z1, A1, W1, b1, Z2, A2, W2, b2, Z3, A3, W3, b3) = cache

    dZ3 = A3 - Y
    dW3 = 1.0 / m * np.dot(dZ3, A2.T)
    db3 = 1.0 / m * np.sum(dZ3, axis=1, keepdims=True)

    dA2 = np.dot(W3.T, dZ3)
    dZ2 = np.multiply(dA2, np.int64(A2 > 0))
    dW2 = 1.0 / m * np.dot(dZ2, A1.T) * (2 if planted_bugs else 1)
    db2 = 1.0 / m * np.sum(dZ2, axis=1, keepdims=True)

    dA1 = np.dot(W2.T, dZ2)
    dZ1 = np.multiply(dA1, np.int64(A1 > 0))
    dW1 = 1.0 / m * np.dot(dZ1, X.T)
    db1 = (4.0 if planted_bugs else 1.0) / m * np.sum(dZ1, axis=1, keepdims=True)

    gradients = {
        "dZ3": dZ3, "dW3": dW3, "db3": db3,
        "dA2": dA2, "dZ2": dZ2, "dW2": dW2, "db2": db2,
        "dA1": dA1, "dZ1": dZ1, "dW1": dW1, "db1": db1,
    }  # fmt: skip
    return gradients


def backward_propagation_n_with_bugs(X, Y, cache):
    return backward_propagation_n(X, Y, cache, planted_bugs=True)


if __name__ == "__main__":
    X, Y, parameters = gradient_check_n_test_case()
    before = {k: v.copy() for k, v in parameters.items()}

    res = jgc.course(forward_propagation_n, backward_propagation_n, parameters, X, Y)
    print(res, end="\n\n")
    assert res.status == "passed", res.report()

    res = jgc.course(forward_propagation_n, backward_propagation_n_with_bugs, parameters, X, Y)
    print(res)
    assert res.status == "failed", res.report()
    failed = {k for k, v in res.leaf_failed.items() if bool(v)}
    assert failed == {"W2", "b1"}, failed

    assert all(np.array_equal(before[k], parameters[k]) for k in parameters)  # nothing was mutated
