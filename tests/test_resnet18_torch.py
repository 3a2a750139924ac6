"""resnet18's torch trainer (``cases/resnet18/torch_impl.py``) and ``equiv.support.torchvision``.

The trainer must train torchvision's own class from the canonical state and report every
quantity of the step from the right moment: activations of the training forward (not of the
evaluation pass), BatchNorm state after the step, evaluation logits after the update. The
checks below tie the reported quantities to each other (a BatchNorm's running statistics to
the batch statistics of the convolution it reads; ``fc`` to the loss; the evaluation logits to
an evaluation forward of the reported parameters and state), and each planted bug below shows
one of them failing. Eager float64 (the checks compare with 1e-9-relative margins); the
compile and jit modes are measured in the helper's report, not here (a compile takes minutes).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from cases.resnet18.spec import (
    ACTIVATION_NAMES,
    PARAM_NAMES,
    SPEC,
    STATE_NAMES,
    conv_layers,
    initial_state,
)

needs_torch = pytest.mark.skipif(find_spec("torch") is None, reason="torch is not installed")

SEED = 3
#: float64 margins for relations that hold exactly in real arithmetic
RTOL, ATOL = 1e-9, 1e-12


def build(dtype: str = "float64", mode: str = "eager", trainer_class=None):
    from cases.resnet18 import torch_impl
    from equiv.backends.torch import TorchEager, TorchJit

    backend = {"eager": TorchEager, "jit": TorchJit}[mode]()
    backend.configure(1)
    state = SPEC.make_state(SEED, dtype)
    trainer = (trainer_class or torch_impl.Trainer)(state, backend)
    return trainer, state


def one_step(**kwargs):
    trainer, state = build(**kwargs)
    trainer.run_step()
    return trainer, state, trainer.record()


@pytest.fixture(scope="module")
def stepped():
    return one_step()


# --- the checks, each a function so that the planted bugs can show it failing -------------


def check_batchnorm_state(record, state) -> None:
    """Each BatchNorm's running statistics after step 0 are torch's update of the initial
    ones with the batch statistics of the convolution output it normalised (recorded as that
    convolution's activation): mean 0.9*0 + 0.1*mean, variance 0.9*1 + 0.1*unbiased var."""
    init = initial_state(state.config)
    for conv, _, _, _, _, _, bn in conv_layers():
        x = record.activations[conv]
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3), ddof=1)
        want_mean = 0.9 * init[f"{bn}.running_mean"] + 0.1 * mean
        want_var = 0.9 * init[f"{bn}.running_var"] + 0.1 * var
        np.testing.assert_allclose(record.state[f"{bn}.running_mean"], want_mean, RTOL, ATOL)
        np.testing.assert_allclose(record.state[f"{bn}.running_var"], want_var, RTOL, ATOL)


def check_batchnorm_outputs(record) -> None:
    """At step 0 (gamma 1, beta 0) each BatchNorm activation is its convolution's output
    normalised with the biased batch statistics: a copy taken after an in-place ReLU or
    ``out += identity`` is not."""
    for conv, _, _, _, _, _, bn in conv_layers():
        x = record.activations[conv]
        mean = x.mean(axis=(0, 2, 3), keepdims=True)
        var = x.var(axis=(0, 2, 3), keepdims=True)
        want = (x - mean) / np.sqrt(var + SPEC.config["bn_eps"])
        np.testing.assert_allclose(record.activations[bn], want, 1e-8, 1e-10, err_msg=bn)


def check_fc_is_the_trained_logits(record, state) -> None:
    """``fc``'s activation is ``avgpool`` through the pre-update fc layer, and the recorded
    loss is its cross-entropy: the activations are the training forward's."""
    import torch
    import torch.nn.functional as F

    w, b = state.params["fc.weight"], state.params["fc.bias"]
    np.testing.assert_allclose(record.activations["fc"], record.activations["avgpool"] @ w.T + b)
    y = torch.from_numpy(state.data["y"]).long()
    loss = F.cross_entropy(torch.from_numpy(record.activations["fc"]), y).item()
    assert loss == pytest.approx(float(record.loss), rel=1e-12)


def check_evaluation(record, state) -> None:
    """The evaluation logits are an eval-mode forward of the reported (updated) parameters
    and state: a fresh torchvision model loaded with them gives them bit for bit."""
    import torch

    from equiv.support.torchvision import resnet18

    net = resnet18(state.config["classes"]).double()
    tensors = {**record.params, **record.state}
    loaded = {k: torch.from_numpy(v) for k, v in tensors.items()}
    net.load_state_dict(loaded, strict=False)
    net.eval()
    with torch.no_grad():
        want = net(torch.from_numpy(state.data["x"])).numpy()
    np.testing.assert_array_equal(record.evaluation["logits"], want)


CHECKS = (check_batchnorm_state, check_fc_is_the_trained_logits, check_evaluation)


# --- the trainer -----------------------------------------------------------------------


@needs_torch
def test_the_model_is_torchvisions_class(stepped):
    from torchvision.models.resnet import BasicBlock, ResNet

    trainer = stepped[0]
    assert type(trainer.net) is ResNet
    assert type(trainer.net.layer1[0]) is BasicBlock
    assert trainer.model is trainer.net  # eager: untransformed


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_canonical_state_loads_and_reads_back_bit_exactly(dtype):
    trainer, state = build(dtype)
    read = {k: v.detach().numpy() for k, v in trainer.net.state_dict().items()}
    want = {**state.params, **initial_state(state.config)}
    counters = {k for k in read if k.endswith("num_batches_tracked")}
    assert set(read) - counters == set(want)
    for name, value in want.items():
        assert read[name].dtype == np.dtype(dtype), name
        assert read[name].tobytes() == value.astype(dtype).tobytes(), name
    assert all(read[k] == 0 for k in counters)


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_step_reports_every_name_in_canonical_shapes_and_dtype(dtype, stepped):
    trainer, state, record = stepped if dtype == "float64" else one_step(dtype=dtype)
    assert tuple(record.grads) == tuple(record.params) == PARAM_NAMES
    assert tuple(record.activations) == ACTIVATION_NAMES  # in execution order
    assert tuple(record.state) == STATE_NAMES
    assert tuple(record.evaluation) == ("logits",)
    n = state.config["N"]
    assert record.activations["conv1"].shape == (n, 64, 16, 16)
    assert record.activations["maxpool"].shape == (n, 64, 8, 8)
    assert record.activations["layer4.1"].shape == (n, 512, 1, 1)
    assert record.activations["avgpool"].shape == (n, 512)
    assert record.activations["fc"].shape == record.evaluation["logits"].shape == (n, 10)
    for name, value in state.params.items():
        assert record.params[name].shape == record.grads[name].shape == value.shape, name
    values = [*record.grads.values(), *record.params.values(), *record.activations.values()]
    values += [*record.state.values(), *record.evaluation.values(), np.asarray(record.loss)]
    assert {v.dtype for v in values} == {np.dtype(dtype)}
    assert abs(float(record.loss) - np.log(10)) < 1.0  # ten classes, drawn weights
    changed = [n for n in PARAM_NAMES if not np.array_equal(record.params[n], state.params[n])]
    assert changed == list(PARAM_NAMES)


@needs_torch
def test_the_records_hold_together(stepped):
    _, state, record = stepped
    check_batchnorm_outputs(record)
    for check in CHECKS:
        check(record, state)


@needs_torch
def test_the_update_is_sgd_with_momentum():
    """Step 2's parameters from steps 1 and 2's gradients by torch's rule: buf = g1,
    then buf = 0.9 buf + g2, p -= 0.01 buf."""
    trainer, state = build()
    trainer.run_step()
    first = trainer.record()
    trainer.run_step()
    second = trainer.record()
    lr, momentum = state.config["lr"], state.config["momentum"]
    for name in ("conv1.weight", "layer3.0.downsample.1.bias", "fc.weight"):
        buf = momentum * first.grads[name] + second.grads[name]
        want = first.params[name] - lr * buf
        np.testing.assert_allclose(second.params[name], want, RTOL, ATOL, err_msg=name)


@needs_torch
def test_jit_scripts_the_model_and_declares_its_activations_not_observed():
    import torch

    trainer, state, record = one_step(mode="jit")
    assert isinstance(trainer.model, torch.jit.ScriptModule)
    assert set(trainer.not_observed) == {"activations"} and record.activations == {}
    eager = one_step()[2]
    assert float(record.loss) == pytest.approx(float(eager.loss), rel=1e-12)
    check_evaluation(record, state)  # the scripted model's state is the reported one
    for name in STATE_NAMES:
        np.testing.assert_allclose(record.state[name], eager.state[name], RTOL, ATOL)


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("plant", [None, "one dict kept across steps"])
def test_compile_traces_the_hooks_once_and_records_what_eager_does(plant, monkeypatch):
    """torch.compile runs the forward hooks inside its graph: the recorded activations (and
    everything else) agree with eager's, and the model compiles twice (training forward with
    recording, evaluation forward) and never again. Planted: a recorder dict kept filled
    across steps fails dynamo's guard on its keys, a third compile. Slow: a first compile
    without inductor's disk cache takes minutes here (2 cores)."""
    from cases.resnet18 import torch_impl
    from equiv.backends.torch import TorchCompile

    if plant:
        kept: dict = {}

        def forward_recorded(self):
            self.recorder.values = kept
            self.recorder.recording = True
            try:
                return self.model(self.x)
            finally:
                self.recorder.recording = False

        monkeypatch.setattr(torch_impl.Trainer, "forward_recorded", forward_recorded)
    backend = TorchCompile()
    backend.configure(1)
    state = SPEC.make_state(SEED, "float64")
    trainer = torch_impl.Trainer(state, backend)
    records = []
    for _ in range(3):
        trainer.run_step()
        records.append(trainer.record())
    if plant:
        assert backend.traces == 3
        return
    assert backend.traces == 2
    eager, _ = build()
    for compiled in records:
        eager.run_step()
        want = eager.record()
        assert float(compiled.loss) == pytest.approx(float(want.loss), rel=1e-9)
        for group in ("activations", "grads", "params", "state", "evaluation"):
            got, ref = getattr(compiled, group), getattr(want, group)
            assert tuple(got) == tuple(ref), group
            for name, value in ref.items():
                scale = np.max(np.abs(value))
                np.testing.assert_allclose(got[name], value, 0, 1e-8 * scale, err_msg=name)


# --- planted bugs: each breaks one check above --------------------------------------------


def planted_trainer(bug: str):
    """The trainer with one bug planted."""
    import torch

    from cases.resnet18 import torch_impl

    class Planted(torch_impl.Trainer):
        def evaluate(self):
            if bug == "hooks record the eval pass":
                self.recorder.recording = True
                try:
                    return super().evaluate()
                finally:
                    self.recorder.recording = False
            if bug == "evaluation in training mode":
                with torch.no_grad():
                    return self.model(self.x)
            return super().evaluate()

        def run_step(self):
            before = {k: v.clone() for k, v in self.buffers.items()}
            super().run_step()
            if bug == "state read before the step":
                self.buffers = before

    return Planted


@needs_torch
@pytest.mark.parametrize(
    ("bug", "check"),
    [
        ("hooks record the eval pass", check_fc_is_the_trained_logits),
        ("hooks record the eval pass", check_batchnorm_state),
        ("state read before the step", check_batchnorm_state),
        ("evaluation in training mode", check_evaluation),
    ],
)
def test_a_planted_bug_is_caught(bug, check):
    trainer, state = build(trainer_class=planted_trainer(bug))
    trainer.run_step()
    with pytest.raises(AssertionError):
        check(trainer.record(), state)


@needs_torch
def test_a_hook_that_keeps_its_output_without_copying_is_caught(monkeypatch):
    """The in-place ReLU after ``bn1`` and ``out += identity`` after ``bn2`` overwrite the
    tensors a hook got: without the copy, the BatchNorm activations are wrong."""
    from cases.resnet18 import torch_impl

    def hook(self, name):
        def record(module, inputs, output):
            if self.recording:
                self.values[name] = output.detach()

        return record

    monkeypatch.setattr(torch_impl.ActivationRecorder, "hook", hook)
    with pytest.raises(AssertionError):
        check_batchnorm_outputs(one_step()[2])


# --- equiv.support.torchvision's two paths, on fake torchvision packages (no torch needed) --

FAKE_RESNET = "def resnet18(weights=None, num_classes=1000):\n    return ('built', num_classes)\n"


def fake_torchvision(root: Path, init: str) -> Path:
    package = root / "torchvision"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text(init)
    (package / "models" / "__init__.py").write_text("")
    (package / "models" / "resnet.py").write_text(FAKE_RESNET)
    return root


def load_through_support(root: Path) -> list[str]:
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(root)!r}, {str(Path.cwd())!r}]
        from equiv.support import torchvision as tv
        print(tv.resnet18(10)); print(tv.stub_reason())
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_a_working_torchvision_is_imported_normally(tmp_path):
    root = fake_torchvision(tmp_path, "")
    assert load_through_support(root) == ["('built', 10)", "None"]


def test_a_torchvision_whose_ops_do_not_load_is_read_through_the_stub(tmp_path):
    root = fake_torchvision(
        tmp_path, "raise RuntimeError('operator torchvision::nms does not exist')\n"
    )
    built, reason = load_through_support(root)
    assert built == "('built', 10)"
    assert reason == "RuntimeError: operator torchvision::nms does not exist"


def test_a_missing_torchvision_is_not_stubbed(tmp_path):
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "from equiv.support import torchvision as tv\n"
        "try:\n    tv.resnet18(10)\nexcept ModuleNotFoundError:\n    print('raised')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "raised", out.stderr
