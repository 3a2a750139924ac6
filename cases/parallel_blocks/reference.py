"""Reference for parallel_blocks: two ParallelBlocks, relu((x @ w1 + b1) * (x @ w2 + b2)), then
an affine output layer; mean squared error over every element. Composed of ``equiv.layers``.

Each block's ReLU acts on a product of two affine maps: its mask comes from
``numerics.product_relu_mask``, keyed by the block's first kernel ("p1_w1", "p2_w1").
"""

from cases.parallel_blocks.spec import BLOCKS, PARAM_NAMES
from equiv import layers
from equiv.numerics import EXACT


def block_forward(x, params, prefix, numerics=EXACT, x_from=None):
    """relu(h1 * h2) and its backward: ``back(grad_out, grads, input_grad=True)`` adds the
    block's parameter gradients to ``grads`` and returns its input's gradient (None without
    ``input_grad``: the first block's input is the data). ``x_from`` names the block whose
    output ``x`` is (its first kernel), None for the data."""
    names = (f"{prefix}_w1", f"{prefix}_b1", f"{prefix}_w2", f"{prefix}_b2")
    w1, b1, w2, b2 = (params[n] for n in names)
    h1, dense1_back = layers.dense(x, w1, b1)
    h2, dense2_back = layers.dense(x, w2, b2)
    product, product_back = layers.multiply(h1, h2)
    mask = numerics.product_relu_mask(h1, h2, x, params, *names, x_from=x_from)
    out, relu_back = layers.relu(product, mask)

    def back(grad_out, grads, input_grad=True):
        grad_h1, grad_h2 = product_back(relu_back(grad_out))
        grad_x1, grads[names[0]], grads[names[1]] = dense1_back(grad_h1, input_grad)
        grad_x2, grads[names[2]], grads[names[3]] = dense2_back(grad_h2, input_grad)
        return grad_x1 + grad_x2 if input_grad else None

    return out, back


def forward_backward(params, data, cfg, prev_loss=None, numerics=EXACT):
    h, backs, x_from = data["x"], [], None
    for prefix in BLOCKS:
        h, back = block_forward(h, params, prefix, numerics, x_from)
        backs.append(back)
        x_from = f"{prefix}_w1"
    y_pred, out_back = layers.dense(h, params["out_w"], params["out_b"])
    loss, loss_back = layers.mse(y_pred, data["y"], cfg.get("loss_reduction", "mean"))

    grads = {}
    grad_h, grads["out_w"], grads["out_b"] = out_back(loss_back())
    grad_h = backs[1](grad_h, grads)
    backs[0](grad_h, grads, input_grad=False)
    return loss, {n: grads[n] for n in PARAM_NAMES}, None
