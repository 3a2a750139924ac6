"""The numpy ground truth: layers with hand-written backward passes, optimizers, the
reference trainer, simulated rounding, and a finite-difference check of the reference itself.
"""
