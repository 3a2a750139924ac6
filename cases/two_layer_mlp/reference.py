"""Reference for two_layer_mlp: the seed's hand-written forward and backward, in numpy."""

import numpy as np

from equiv.kinks import relu_mask


def forward_backward(params, data, cfg, prev_loss=None, force_branch=None, flip=None):
    x, y = data["x"], data["y"]
    w1, w2 = params["w1"], params["w2"]
    h = x @ w1
    active = relu_mask(h, flip, x, params, "w1")
    h_relu = h * active
    y_pred = h_relu @ w2
    diff = y_pred - y
    loss = np.sum(diff**2)

    grad_y_pred = 2.0 * diff
    grad_w2 = h_relu.T @ grad_y_pred
    grad_h_relu = grad_y_pred @ w2.T
    grad_h = grad_h_relu * active
    grad_w1 = x.T @ grad_h
    return loss, {"w1": grad_w1, "w2": grad_w2}, None
