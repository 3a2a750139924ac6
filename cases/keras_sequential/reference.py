"""Reference for keras_sequential: Dense-relu-Dense with biases, mean squared error, composed
of ``equiv.layers``."""

from equiv import layers
from equiv.numerics import EXACT


def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):
    x, y = data["x"], data["y"]
    h, dense1_back = layers.dense(x, params["w1"], params["b1"])
    h_relu, relu_back = layers.relu(h, numerics.relu_mask(h, x, params, "w1", "b1"))
    y_pred, dense2_back = layers.dense(h_relu, params["w2"], params["b2"])
    loss, loss_back = layers.mse(y_pred, y, cfg.get("loss_reduction", "mean"))

    grad_h_relu, grad_w2, grad_b2 = dense2_back(loss_back())
    _, grad_w1, grad_b1 = dense1_back(relu_back(grad_h_relu), input_grad=False)
    return loss, {"w1": grad_w1, "b1": grad_b1, "w2": grad_w2, "b2": grad_b2}, None
