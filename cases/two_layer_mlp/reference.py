"""Reference for two_layer_mlp: the seed's network, x @ w1 -> relu -> @ w2, sum of squared
errors, composed of ``equiv.layers``."""

from equiv import layers
from equiv.numerics import EXACT


def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):
    x, y = data["x"], data["y"]
    h, dense1_back = layers.dense(x, params["w1"])
    h_relu, relu_back = layers.relu(h, numerics.relu_mask(h, x, params, "w1"))
    y_pred, dense2_back = layers.dense(h_relu, params["w2"])
    loss, loss_back = layers.sum_of_squares(y_pred, y)

    grad_h_relu, grad_w2, _ = dense2_back(loss_back())
    _, grad_w1, _ = dense1_back(relu_back(grad_h_relu), input_grad=False)
    return loss, {"w1": grad_w1, "w2": grad_w2}, None
