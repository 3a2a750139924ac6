"""The built-in cases: one folder each, the same file names in every folder.

spec.py        the framework-neutral problem (sizes, loss, optimizer, steps) and its seed
reference.py   numpy with hand-written backward passes: the ground truth
torch_impl.py  PyTorch, in PyTorch's idiom
tf_impl.py     TensorFlow 2 and the TF1 graph, in TensorFlow's idiom
keras_impl.py  Keras 3, in Keras's idiom
"""
