"""Reference for dynamic_branching: the branch on the previous loss picks the output layer,
then two_layer_mlp's network; the branch not taken gets a zero gradient."""

import numpy as np

from equiv import layers
from equiv.numerics import EXACT


def choose_branch(prev_loss, cfg):
    return "w2a" if prev_loss < cfg["threshold"] else "w2b"


def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):
    branch = numerics.branch(choose_branch(prev_loss, cfg))
    x, y = data["x"], data["y"]
    h, dense1_back = layers.dense(x, params["w1"])
    h_relu, relu_back = layers.relu(h, numerics.relu_mask(h, x, params, "w1"))
    y_pred, dense2_back = layers.dense(h_relu, params[branch])
    loss, loss_back = layers.sum_of_squares(y_pred, y)

    grad_h_relu, grad_w2, _ = dense2_back(loss_back())
    _, grad_w1, _ = dense1_back(relu_back(grad_h_relu), input_grad=False)
    grads = {"w1": grad_w1, "w2a": np.zeros_like(grad_w2), "w2b": np.zeros_like(grad_w2)}
    grads[branch] = grad_w2
    return loss, grads, branch
