"""Reference for parallel_blocks: two ParallelBlocks, relu((x @ w1 + b1) * (x @ w2 + b2)), then
an affine output layer; mean squared error over every element.

Each block's ReLU acts on a product of two affine maps: its mask goes through
``equiv.kinks.product_relu_mask``, keyed by the block's first kernel ("p1_w1", "p2_w1").
"""

import numpy as np

from cases.parallel_blocks.spec import BLOCKS, PARAM_NAMES
from equiv.kinks import product_relu_mask


def block_forward(x, params, prefix, flip):
    names = (f"{prefix}_w1", f"{prefix}_b1", f"{prefix}_w2", f"{prefix}_b2")
    w1, b1, w2, b2 = (params[n] for n in names)
    h1 = x @ w1 + b1
    h2 = x @ w2 + b2
    active = product_relu_mask(h1, h2, flip, x, params, *names)
    return h1 * h2 * active, (x, h1, h2, active)


def block_backward(grad_out, params, prefix, cache, grads, input_grad=True):
    """Adds the block's parameter gradients to ``grads``; returns the gradient of its input
    (None when ``input_grad`` is false: the first block's input is the data)."""
    x, h1, h2, active = cache
    grad_product = grad_out * active
    grad_h1, grad_h2 = grad_product * h2, grad_product * h1
    grads[f"{prefix}_w1"], grads[f"{prefix}_b1"] = x.T @ grad_h1, grad_h1.sum(axis=0)
    grads[f"{prefix}_w2"], grads[f"{prefix}_b2"] = x.T @ grad_h2, grad_h2.sum(axis=0)
    if not input_grad:
        return None
    return grad_h1 @ params[f"{prefix}_w1"].T + grad_h2 @ params[f"{prefix}_w2"].T


def forward_backward(params, data, cfg, prev_loss=None, force_branch=None, flip=None):
    h, caches = data["x"], []
    for prefix in BLOCKS:
        h, cache = block_forward(h, params, prefix, flip)
        caches.append(cache)
    y_pred = h @ params["out_w"] + params["out_b"]
    diff = y_pred - data["y"]
    loss = np.mean(diff**2)

    grad_y_pred = 2.0 * diff / diff.size
    grads = {"out_w": h.T @ grad_y_pred, "out_b": grad_y_pred.sum(axis=0)}
    grad_h = grad_y_pred @ params["out_w"].T
    grad_h = block_backward(grad_h, params, "p2", caches[1], grads)
    block_backward(grad_h, params, "p1", caches[0], grads, input_grad=False)
    return loss, {n: grads[n] for n in PARAM_NAMES}, None
