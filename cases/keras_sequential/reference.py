"""Reference for keras_sequential: Dense-relu-Dense with biases, mean squared error."""

import numpy as np

from equiv.kinks import relu_mask


def forward_backward(params, data, cfg, prev_loss=None, force_branch=None, flip=None):
    x, y = data["x"], data["y"]
    h = x @ params["w1"] + params["b1"]
    active = relu_mask(h, flip, x, params, "w1", "b1")
    h_relu = h * active
    y_pred = h_relu @ params["w2"] + params["b2"]
    diff = y_pred - y
    loss = np.mean(diff**2)

    grad_y_pred = 2.0 * diff / diff.size
    grad_w2 = h_relu.T @ grad_y_pred
    grad_b2 = grad_y_pred.sum(axis=0)
    grad_h = (grad_y_pred @ params["w2"].T) * active
    grad_w1 = x.T @ grad_h
    grad_b1 = grad_h.sum(axis=0)
    return loss, {"w1": grad_w1, "b1": grad_b1, "w2": grad_w2, "b2": grad_b2}, None
