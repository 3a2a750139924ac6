"""Reference for sigmoid_custom_op: x @ w1 -> sigmoid -> @ w2, sum of squared errors; the
sigmoid's hand-written backward is ``equiv.layers.sigmoid``'s, gy * y * (1 - y)."""

from equiv import layers
from equiv.numerics import EXACT


def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):
    del numerics  # smooth everywhere: no branch, no kink
    x, y = data["x"], data["y"]
    h, dense1_back = layers.dense(x, params["w1"])
    s, sigmoid_back = layers.sigmoid(h)
    y_pred, dense2_back = layers.dense(s, params["w2"])
    loss, loss_back = layers.sum_of_squares(y_pred, y)

    grad_s, grad_w2, _ = dense2_back(loss_back())
    _, grad_w1, _ = dense1_back(sigmoid_back(grad_s), input_grad=False)
    return loss, {"w1": grad_w1, "w2": grad_w2}, None
