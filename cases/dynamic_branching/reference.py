"""Reference for dynamic_branching: the branch on the previous loss, then the seed's backward."""

import numpy as np

from equiv.kinks import relu_mask


def choose_branch(prev_loss, cfg):
    return "w2a" if prev_loss < cfg["threshold"] else "w2b"


def forward_backward(params, data, cfg, prev_loss, force_branch=None, flip=None):
    """``force_branch`` and ``flip`` are for the tolerance calibration only (see
    ``equiv.tolerance``); implementations never see them."""
    branch = force_branch or choose_branch(prev_loss, cfg)
    x, y = data["x"], data["y"]
    w1, w2 = params["w1"], params[branch]
    h = x @ w1
    active = relu_mask(h, flip, x, params, "w1")
    h_relu = h * active
    y_pred = h_relu @ w2
    diff = y_pred - y
    loss = np.sum(diff**2)

    grad_y_pred = 2.0 * diff
    grad_w2 = h_relu.T @ grad_y_pred
    grad_h = (grad_y_pred @ w2.T) * active
    grad_w1 = x.T @ grad_h
    grads = {"w1": grad_w1, "w2a": np.zeros_like(w2), "w2b": np.zeros_like(w2)}
    grads[branch] = grad_w2
    return loss, grads, branch
