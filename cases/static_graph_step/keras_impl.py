"""static_graph_step in Keras 3: the branch as ``keras.ops.cond`` on a loss kept in a variable.

The previous loss lives in a non-trainable ``keras.Variable`` and the head is chosen by
``ops.cond(prev_loss < threshold, ...)`` inside the loss function, so the decision is data in
the computation rather than a Python ``if`` (``tf.cond`` on TensorFlow, ``lax.cond`` on jax; on
torch Keras's cond is a plain ``if`` on the tensor, torch having no eager graph to put it in).
The step runs eagerly on all three backends: Keras cells are not compiled modes here. Gradients
of the head not taken are zeros; SGD on zero leaves it as it is. Otherwise dynamic_branching's
Keras code (its layers, loss and optimizer).

The loss is a method that reads nothing but the layers' kernels and ``prev_loss``, and its
gradient function is made once (``backend.value_and_grad_fn``, with ``prev_loss`` as state),
as Keras's JAX training step takes trainable and non-trainable variables: on jax the loss is
then traced once and its ``cond`` compiled once, where a loss closing over a new decision every
step made eager JAX compile the cond twice a step (a step took 65-90 ms, now 8-9 ms). Its ops
still run one by one.

``load_state`` (dynamic_branching's) assigns the state's ``prev_loss`` to the variable, in
place: the gradient function made once keeps reading it.
"""

import keras
from keras import ops

from cases.dynamic_branching import keras_impl as dynamic_branching


class Trainer(dynamic_branching.Trainer):
    def __init__(self, state, backend):
        super().__init__(state, backend)
        cfg, dtype = state.config, state.dtype
        self.head_a, self.head_b = self.heads["w2a"], self.heads["w2b"]
        self.prev_loss = keras.Variable(cfg["initial_prev_loss"], dtype=dtype, trainable=False)
        self.threshold = ops.convert_to_tensor(cfg["threshold"], dtype=dtype)
        # made once: the loss reads no variables but these (prev_loss read, not differentiated)
        self.value_and_grad = backend.value_and_grad_fn(
            self.compute_loss, self.variables, state=[self.prev_loss]
        )

    def compute_loss(self):
        use_a = ops.less(self.prev_loss, self.threshold)
        h = self.hidden(self.x)
        y_pred = ops.cond(use_a, lambda: self.head_a(h), lambda: self.head_b(h))
        return self.loss_fn(self.y, y_pred)

    def take_prev_loss(self, loss):
        self.prev_loss.assign(loss)

    def run_step(self):
        self.use_a = ops.less(self.prev_loss, self.threshold)  # the branch the loss takes
        loss, grads = self.value_and_grad()
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self.prev_loss.assign(loss)
        self.last = (loss, grads)

    @property
    def branch(self):
        return "w2a" if bool(self.backend.to_numpy(self.use_a)) else "w2b"


def build(state, backend):
    return Trainer(state, backend)
