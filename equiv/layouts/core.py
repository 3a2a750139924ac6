"""A layer's layout in one framework: its tensors, each declared as a function of the layer's
*canonical* parameters, with the inverse where one exists.

Why a declaration and not a pair of hand-written converters: the declaration is checked when
it is made (every canonical parameter mapped, none mapped twice, every shape right), it runs
both ways from one statement, and it says what it cannot do. A framework tensor made of
several canonical parameters (Keras's LSTM ``bias`` is torch's ``bias_ih + bias_hh``) has no
inverse; the layout then names what that framework *can* observe (``bias_ih+bias_hh``), so a
comparison compares exactly that and never a made-up split of the sum.

The unit is a :class:`Rule`: some framework tensors (``targets``) made of some canonical
parameters (``sources``). An *invertible* rule moves entries and computes nothing (a
transpose, a reshape, a concatenation, a permutation of gate blocks): its inverse is exact, bit
for bit, and a gradient converts the way the value does. A *derived* rule computes (a sum):
it declares its observables and its pullback, the gradient of each source given the gradient
of each target (the chain rule: the gradient of a summed bias is the gradient of each part).

Plain numpy, no framework: a framework tensor converts at its boundary with the framework's
own ``numpy()``/``from_numpy``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from equiv.layouts.transposition import contiguous

Array = np.ndarray
Shape = tuple[int, ...]


class LayoutError(ValueError):
    """A layout declared or used wrongly. The message is one line naming the layer and the
    parameter or tensor."""


class NotInvertible(LayoutError):
    """A canonical parameter that the framework holds only inside a derived tensor: it cannot
    be recovered, only the derived quantities compared (``Layout.observed``)."""


# -- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observable:
    """A named quantity both sides can compute: from the canonical sources of its rule, and
    from the framework targets of its rule. It is in the canonical layout (a summed LSTM bias
    is (4H,) in torch's gate order, whatever order the framework holds it in)."""

    name: str
    from_canonical: Callable[..., Array]
    from_framework: Callable[..., Array]


@dataclass(frozen=True)
class Rule:
    """Framework ``targets`` made of canonical ``sources``.

    ``forward(*sources) -> tuple of targets``. ``inverse(*targets) -> tuple of sources`` for an
    invertible rule, which must only move entries (so that it is exact and converts gradients
    as it converts values); None for a derived rule, which declares ``observables`` and a
    ``pullback(*target_grads) -> tuple of source grads`` instead. ``why`` says, for a derived
    rule, why the framework holds it so.
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    forward: Callable[..., tuple[Array, ...]]
    inverse: Callable[..., tuple[Array, ...]] | None = None
    pullback: Callable[..., tuple[Array, ...]] | None = None
    observables: tuple[Observable, ...] = ()
    why: str = ""

    @property
    def invertible(self) -> bool:
        return self.inverse is not None

    def make(self, canonical: Mapping[str, Array]) -> dict[str, Array]:
        """The targets from the sources, by name."""
        made = self.forward(*(canonical[s] for s in self.sources))
        return dict(zip(self.targets, made, strict=True))

    def unmake(self, framework: Mapping[str, Array]) -> dict[str, Array]:
        """The sources from the targets, by name (an invertible rule)."""
        assert self.inverse is not None
        return dict(
            zip(self.sources, self.inverse(*(framework[t] for t in self.targets)), strict=True)
        )

    def grads_back(self, *grads: Array) -> tuple[Array, ...]:
        """The sources' gradients from the targets' gradients."""
        if self.inverse is not None:
            return self.inverse(*grads)
        assert self.pullback is not None
        return self.pullback(*grads)

    def renamed(self, canonical: Callable[[str], str], framework: Callable[[str], str]) -> Rule:
        observables = tuple(replace(o, name=canonical(o.name)) for o in self.observables)
        return replace(
            self,
            sources=tuple(map(canonical, self.sources)),
            targets=tuple(map(framework, self.targets)),
            observables=observables,
        )


def _contiguous(array: Array) -> Array:
    # a transposed kernel copied in two passes, not strided through (equiv.layouts.transposition)
    return contiguous(array)


def copy(
    source: str,
    target: str,
    forward: Callable[[Array], Array] | None = None,
    inverse: Callable[[Array], Array] | None = None,
) -> Rule:
    """One canonical parameter held as one framework tensor, as it is or moved by ``forward``
    (a transpose, a reshape) with its ``inverse``."""
    if (forward is None) != (inverse is None):
        raise LayoutError(f"copy {source!r} -> {target!r}: give forward and inverse, or neither")
    fwd = forward or (lambda a: a)
    inv = inverse or (lambda a: a)
    return Rule(
        (source,),
        (target,),
        lambda a: (_contiguous(fwd(a)),),
        lambda t: (_contiguous(inv(t)),),
    )


def transpose(source: str, target: str, axes: Sequence[int]) -> Rule:
    """A copy through ``np.transpose(axes)`` (an (in, out) kernel as an (out, in) weight)."""
    axes = tuple(axes)
    back = tuple(int(i) for i in np.argsort(axes))
    return copy(source, target, lambda a: np.transpose(a, axes), lambda t: np.transpose(t, back))


def reshape(source: str, target: str, shape: Shape, canonical_shape: Shape) -> Rule:
    """A copy through a C-order reshape (a (d, d) kernel as Keras's (d, heads, head_dim))."""
    return copy(source, target, lambda a: a.reshape(shape), lambda t: t.reshape(canonical_shape))


def pack(
    sources: Sequence[str],
    target: str,
    forward: Callable[..., Array],
    inverse: Callable[[Array], Sequence[Array]],
) -> Rule:
    """Several canonical parameters held as one framework tensor, invertibly (torch's packed
    ``in_proj_weight``; Keras's GRU bias, input and recurrent stacked)."""
    return Rule(
        tuple(sources),
        (target,),
        lambda *a: (_contiguous(forward(*a)),),
        lambda t: tuple(_contiguous(x) for x in inverse(t)),
    )


def split(
    source: str,
    targets: Sequence[str],
    forward: Callable[[Array], Sequence[Array]],
    inverse: Callable[..., Array],
) -> Rule:
    """One canonical parameter held as several framework tensors, invertibly (Flax's LSTM
    cell, one Dense per gate)."""
    return Rule(
        (source,),
        tuple(targets),
        lambda a: tuple(_contiguous(x) for x in forward(a)),
        lambda *t: (_contiguous(inverse(*t)),),
    )


def derived(
    sources: Sequence[str],
    targets: Sequence[str],
    forward: Callable[..., Sequence[Array]],
    pullback: Callable[..., Sequence[Array]],
    observables: Sequence[Observable],
    why: str,
) -> Rule:
    """Framework tensors computed from canonical parameters, with no inverse: what they let
    one compare is ``observables``; ``pullback`` is the chain rule for gradients."""
    if not observables:
        raise LayoutError(f"derived {list(targets)}: declare what the framework can observe")
    return Rule(
        tuple(sources),
        tuple(targets),
        lambda *a: tuple(_contiguous(x) for x in forward(*a)),
        None,
        lambda *g: tuple(_contiguous(x) for x in pullback(*g)),
        tuple(observables),
        why,
    )


def summed(
    sources: Sequence[str],
    target: str,
    why: str,
    *,
    name: str | None = None,
    to_framework: Callable[[Array], Array] | None = None,
    to_canonical: Callable[[Array], Array] | None = None,
) -> Rule:
    """One framework tensor that is the sum of canonical parameters of one shape (moved by
    ``to_framework``, an index map with its inverse ``to_canonical``). It observes the sum, named
    ``name`` (default ``a+b``); the gradient of each part is the gradient of the sum."""
    sources = tuple(sources)
    fwd = to_framework or (lambda a: a)
    inv = to_canonical or (lambda a: a)
    total = name or "+".join(sources)

    def add(*parts: Array) -> Array:
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out

    return derived(
        sources,
        (target,),
        lambda *a: (fwd(add(*a)),),
        lambda g: tuple(inv(g) for _ in sources),
        (Observable(total, add, inv),),
        why,
    )


# -- activations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Activation:
    """How a layer's activation (its input or output) is laid out in a framework, against the
    canonical layout: ``perm`` takes canonical axes to framework axes (None: the same, at any
    rank). Canonical activations are torch's: channels first (N, C, *spatial), sequences batch
    first (N, T, F)."""

    name: str
    perm: tuple[int, ...] | None = None

    def _check(self, x: Array) -> None:
        if self.perm is not None and np.ndim(x) != len(self.perm):
            raise LayoutError(
                f"activation {self.name}: expects a {len(self.perm)}-d array, "
                f"given shape {np.shape(x)}"
            )

    def to_framework(self, x: Array) -> Array:
        self._check(x)
        return x if self.perm is None else _contiguous(np.transpose(x, self.perm))

    def to_canonical(self, x: Array) -> Array:
        self._check(x)
        if self.perm is None:
            return x
        return _contiguous(np.transpose(x, tuple(int(i) for i in np.argsort(self.perm))))


#: the canonical layout itself, at any rank
SAME = Activation("same")


def channels_last(spatial: int) -> Activation:
    """Canonical (N, C, *spatial) <-> (N, *spatial, C): Keras's, TensorFlow's and Flax's
    default data format (NCW <-> NWC, NCHW <-> NHWC, NCDHW <-> NDHWC)."""
    names = {1: "NCW->NWC", 2: "NCHW->NHWC", 3: "NCDHW->NDHWC"}
    perm = (0, *range(2, spatial + 2), 1)
    return Activation(names.get(spatial, f"channels_last({spatial})"), perm)


#: canonical (N, T, F) <-> (T, N, F): torch's recurrent layers and nn.MultiheadAttention
#: with ``batch_first=False`` (their default)
TIME_MAJOR = Activation("NTF->TNF", (1, 0, 2))


# -- the layout -------------------------------------------------------------------------------


def _shape(value: Iterable[int] | int) -> Shape:
    return (int(value),) if isinstance(value, int | np.integer) else tuple(int(v) for v in value)


@dataclass(frozen=True)
class Layout:
    """One layer in one framework: its canonical parameters (name -> shape), its framework
    tensors (name -> shape, in the framework's own order: ``state_dict`` for torch,
    ``layer.weights`` for Keras) and the rules between them.

    ``state`` names the canonical entries that are state, not trained (BatchNorm's running
    statistics); ``ignored`` the framework tensors with no canonical counterpart and why
    (torch's ``num_batches_tracked``); ``inputs``/``outputs`` the layer's activation layouts;
    ``notes`` the conventions a port must set by hand (momentum, epsilon). Everything is
    checked when the layout is made: see ``_validate``.
    """

    name: str
    canonical: Mapping[str, Shape]
    framework: Mapping[str, Shape]
    rules: tuple[Rule, ...]
    state: frozenset[str] = frozenset()
    ignored: Mapping[str, str] = field(default_factory=dict)
    inputs: Activation = SAME
    outputs: Activation = SAME
    notes: tuple[str, ...] = ()
    layers: Mapping[str, Layout] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "canonical", {k: _shape(v) for k, v in self.canonical.items()})
        object.__setattr__(self, "framework", {k: _shape(v) for k, v in self.framework.items()})
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "state", frozenset(self.state))
        self._validate()

    # -- declaration-time checks --------------------------------------------------------------

    def _fail(self, message: str) -> LayoutError:
        return LayoutError(f"{self.name}: {message}")

    def _validate(self) -> None:
        claimed: dict[str, int] = {}
        used: set[str] = set()
        made: dict[str, int] = {}
        observed: set[str] = set()
        for i, rule in enumerate(self.rules):
            for source in rule.sources:
                if source not in self.canonical:
                    raise self._fail(f"a rule reads {source!r}, not a canonical parameter")
                used.add(source)
                if rule.invertible:
                    if source in claimed:
                        raise self._fail(
                            f"canonical {source!r} is mapped twice, to "
                            f"{list(self.rules[claimed[source]].targets)} and {list(rule.targets)}"
                        )
                    claimed[source] = i
            for target in rule.targets:
                if target not in self.framework:
                    raise self._fail(f"a rule makes {target!r}, not a declared framework tensor")
                if target in made:
                    raise self._fail(f"framework {target!r} is made by two rules")
                made[target] = i
            kinds = {source in self.state for source in rule.sources}
            if len(kinds) > 1:
                raise self._fail(f"a rule mixes state and parameters: {list(rule.sources)}")
            for obs in rule.observables:
                if obs.name in self.canonical or obs.name in observed:
                    raise self._fail(f"observable {obs.name!r} is named twice")
                observed.add(obs.name)
        if unmapped := [p for p in self.canonical if p not in used]:
            raise self._fail(f"canonical {unmapped[0]!r} is mapped to no framework tensor")
        if unmade := [t for t in self.framework if t not in made]:
            raise self._fail(f"framework {unmade[0]!r} is made by no rule")
        if stray := [p for p in self.state if p not in self.canonical]:
            raise self._fail(f"state {stray[0]!r} is not a canonical parameter")
        for rule in self.rules:  # the shapes, on zeros: every rule runs once, both ways
            parts = [np.zeros(self.canonical[s]) for s in rule.sources]
            out = rule.forward(*parts)
            self._check_shapes(rule.targets, out, self.framework, "framework", "the rule makes")
            back = rule.grads_back(*out)
            self._check_shapes(rule.sources, back, self.canonical, "canonical", "its inverse makes")

    def _check_shapes(
        self,
        names: Sequence[str],
        arrays: Sequence[Array],
        declared: Mapping[str, Shape],
        side: str,
        what: str,
    ) -> None:
        if len(arrays) != len(names):
            raise self._fail(f"a rule gives {len(arrays)} arrays for {side} {list(names)}")
        for name, array in zip(names, arrays, strict=True):
            if np.shape(array) != declared[name]:
                raise self._fail(
                    f"{side} {name!r} is {declared[name]}, {what} {tuple(np.shape(array))}"
                )

    def named(self, names: Mapping[str, str], name: str | None = None) -> Layout:
        """This layout with canonical parameters (and observables) renamed by ``names``
        (``{"fc1.kernel": "w1"}``): a case whose canonical names predate its layers' (``w1``,
        ``b1``) uses the standard layouts under them. A name not in ``names`` stays; two
        parameters renamed to one name is a ``LayoutError``."""
        if unknown := [n for n in names if n not in self.canonical]:
            raise self._fail(f"renames {unknown[0]!r}, not a canonical parameter")
        new = [names.get(n, n) for n in self.canonical]
        if len(set(new)) != len(new):
            twice = next(n for n in new if new.count(n) > 1)
            raise self._fail(f"two canonical parameters renamed to {twice!r}")

        def rename(n: str) -> str:
            return names.get(n, n)

        return Layout(
            name or self.name,
            {rename(k): v for k, v in self.canonical.items()},
            self.framework,
            tuple(rule.renamed(rename, lambda t: t) for rule in self.rules),
            frozenset(rename(s) for s in self.state),
            self.ignored,
            self.inputs,
            self.outputs,
            self.notes,
            self.layers,
        )

    def hidden(self) -> dict[str, tuple[str, Observable]]:
        """Each canonical parameter the framework holds only inside a derived tensor -> (the
        observable that shows it, that observable): what a comparison compares instead."""
        out: dict[str, tuple[str, Observable]] = {}
        for source, rule in self._derived_only().items():
            for obs in rule.observables:
                out[source] = (obs.name, obs)
        return out

    def observable_sources(self) -> dict[str, tuple[str, ...]]:
        """Each derived observable's name -> the canonical parameters it is computed from (a
        comparison bounds a sum's tolerance by its parts')."""
        return {obs.name: rule.sources for rule in self.rules for obs in rule.observables}

    # -- properties -----------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """The framework tensors, in the framework's own order."""
        return tuple(self.framework)

    @property
    def invertible(self) -> bool:
        """Whether every canonical parameter can be recovered from the framework's tensors."""
        return not self._derived_only()

    @property
    def params(self) -> tuple[str, ...]:
        """The canonical entries that are trained (not ``state``)."""
        return tuple(p for p in self.canonical if p not in self.state)

    @property
    def trainable(self) -> tuple[str, ...]:
        """The framework tensors that hold trained parameters (those that have gradients)."""
        out: list[str] = []
        for rule in self.rules:
            if not any(s in self.state for s in rule.sources):
                out += rule.targets
        return tuple(t for t in self.framework if t in out)

    def _derived_only(self) -> dict[str, Rule]:
        claimed = {s for r in self.rules if r.invertible for s in r.sources}
        return {s: r for r in self.rules if not r.invertible for s in r.sources if s not in claimed}

    # -- conversions ----------------------------------------------------------------------

    def _checked(
        self, given: Mapping[str, Array], declared: Mapping[str, Shape], side: str
    ) -> dict[str, Array]:
        if missing := [n for n in declared if n not in given]:
            raise self._fail(f"{side} {missing[0]!r} is missing (given {sorted(given)})")
        ignored = self.ignored if side == "framework" else {}
        if unknown := [n for n in given if n not in declared and n not in ignored]:
            raise self._fail(f"{side} {unknown[0]!r} is not in this layout ({list(declared)})")
        arrays = {n: np.asarray(given[n]) for n in declared}
        for name, array in arrays.items():
            if array.shape != declared[name]:
                raise self._fail(
                    f"{side} {name!r} has shape {array.shape}, expects {declared[name]}"
                )
        return arrays

    def to_framework(self, canonical: Mapping[str, Array]) -> dict[str, Array]:
        """The framework's tensors (in its own order) from the canonical parameters (and state)."""
        arrays = self._checked(canonical, self.canonical, "canonical")
        out: dict[str, Array] = {}
        for rule in self.rules:
            out.update(rule.make(arrays))
        return {t: out[t] for t in self.framework}

    def to_canonical(self, framework: Mapping[str, Array]) -> dict[str, Array]:
        """The canonical parameters from the framework's tensors, bit for bit. Raises
        ``NotInvertible`` where the framework holds a parameter only inside a derived tensor:
        ``observed`` gives what can be compared instead."""
        if derived_only := self._derived_only():
            source, rule = next(iter(derived_only.items()))
            names = [o.name for o in rule.observables]
            raise NotInvertible(
                f"{self.name}: canonical {source!r} is held only inside {list(rule.targets)} "
                f"({rule.why}); compare the observables {names} instead (observed())"
            )
        arrays = self._checked(framework, self.framework, "framework")
        out: dict[str, Array] = {}
        for rule in self.rules:
            out.update(rule.unmake(arrays))
        return {p: out[p] for p in self.canonical}

    def observed(self, framework: Mapping[str, Array]) -> dict[str, Array]:
        """What the framework's tensors say in canonical terms: each canonical parameter it
        holds invertibly, under its canonical name, and each derived quantity, under its
        observable's name (``bias_ih+bias_hh``)."""
        arrays = self._checked(framework, self.framework, "framework")
        out: dict[str, Array] = {}
        derived: dict[str, Array] = {}
        for rule in self.rules:
            targets = [arrays[t] for t in rule.targets]
            if rule.invertible:
                out.update(rule.unmake(arrays))
            for obs in rule.observables:
                derived[obs.name] = _contiguous(obs.from_framework(*targets))
        return {**{p: out[p] for p in self.canonical if p in out}, **derived}

    def observables(self, canonical: Mapping[str, Array]) -> dict[str, Array]:
        """The same quantities as ``observed``, computed from canonical arrays: the two
        dictionaries have the same keys and compare entry by entry."""
        arrays = self._checked(canonical, self.canonical, "canonical")
        claimed = {s for r in self.rules if r.invertible for s in r.sources}
        derived = {
            obs.name: _contiguous(obs.from_canonical(*(arrays[s] for s in rule.sources)))
            for rule in self.rules
            for obs in rule.observables
        }
        return {**{p: arrays[p] for p in self.canonical if p in claimed}, **derived}

    def grads_to_canonical(self, grads: Mapping[str, Array]) -> dict[str, Array]:
        """The gradients of the canonical parameters from those of the framework's trainable
        tensors, by the chain rule: where a framework tensor is a sum, each part's gradient is
        the sum's; where a parameter feeds several tensors, its gradient adds theirs."""
        declared = {t: self.framework[t] for t in self.trainable}
        arrays = self._checked(grads, declared, "gradient of")
        out: dict[str, Array] = {}
        for rule in self.rules:
            if rule.targets[0] not in declared:
                continue
            for source, grad in zip(
                rule.sources, rule.grads_back(*(arrays[t] for t in rule.targets)), strict=True
            ):
                out[source] = grad if source not in out else out[source] + grad
        return {p: out[p] for p in self.params}

    def grads_to_framework(self, grads: Mapping[str, Array]) -> dict[str, Array]:
        """The framework tensors' gradients from the canonical parameters' gradients, where the
        layout is invertible (a derived tensor's gradient is not a function of its parts'
        alone in general: compare in canonical terms, ``grads_to_canonical``)."""
        if derived_only := self._derived_only():
            source, rule = next(iter(derived_only.items()))
            raise NotInvertible(
                f"{self.name}: the gradient of {list(rule.targets)} is not given by canonical "
                f"gradients (it holds {source!r} inside a derived tensor); use grads_to_canonical"
            )
        declared = {p: self.canonical[p] for p in self.params}
        arrays = self._checked(grads, declared, "gradient of")
        out: dict[str, Array] = {}
        for rule in self.rules:
            if rule.sources[0] in declared:
                out.update(rule.make(arrays))
        return {t: out[t] for t in self.trainable}

    # -- a self-check, for tests and for a user's own layouts -----------------------------

    def verify(self, seed: int = 0) -> None:
        """Raises ``LayoutError`` unless, on random float64 arrays: every invertible rule's
        inverse undoes it bit for bit, every observable agrees between its two sides, and every
        rule's gradient rule is the adjoint of the rule (<forward(p), g> = <p, grads_back(g)>,
        the chain rule's definition; it fails for an invertible rule that computes instead of
        moving entries)."""
        rng = np.random.default_rng(seed)
        for rule in self.rules:
            parts = [rng.standard_normal(self.canonical[s]) for s in rule.sources]
            out = rule.forward(*parts)
            if rule.invertible:
                back = rule.inverse(*out)
                for name, a, b in zip(rule.sources, parts, back, strict=True):
                    if not np.array_equal(a, b):
                        raise self._fail(f"the inverse of {list(rule.targets)} loses {name!r}")
            for obs in rule.observables:
                a, b = obs.from_canonical(*parts), obs.from_framework(*out)
                if np.shape(a) != np.shape(b) or not np.allclose(a, b, rtol=1e-14, atol=0):
                    raise self._fail(f"observable {obs.name!r} differs between its two sides")
            grads = [rng.standard_normal(self.framework[t]) for t in rule.targets]
            lhs = sum(float(np.vdot(o, g)) for o, g in zip(out, grads, strict=True))
            rhs = sum(
                float(np.vdot(p, g)) for p, g in zip(parts, rule.grads_back(*grads), strict=True)
            )
            if not np.isclose(lhs, rhs, rtol=1e-10, atol=1e-10):
                raise self._fail(
                    f"the gradient rule of {list(rule.targets)} is not the chain rule "
                    f"(<f(p), g> = {lhs!r}, <p, f'(g)> = {rhs!r})"
                )


def compose(
    name: str,
    layers: Mapping[str, Layout],
    *,
    canonical_sep: str = ".",
    framework_sep: str = ".",
) -> Layout:
    """A model's layout from its layers' (``{"fc1": dense.torch_linear(4, 8), ...}``): names
    prefixed (``fc1.kernel``; ``fc1.weight`` in torch's ``state_dict``, ``fc1/kernel`` with
    ``framework_sep="/"`` for Keras paths). Each layer's own layout, with its activations,
    stays in ``layers``."""
    canonical: dict[str, Shape] = {}
    framework: dict[str, Shape] = {}
    rules: list[Rule] = []
    state: set[str] = set()
    ignored: dict[str, str] = {}
    for prefix, layer in layers.items():

        def c(n: str, p: str = prefix) -> str:
            return f"{p}{canonical_sep}{n}"

        def f(n: str, p: str = prefix) -> str:
            return f"{p}{framework_sep}{n}"

        canonical.update({c(k): v for k, v in layer.canonical.items()})
        framework.update({f(k): v for k, v in layer.framework.items()})
        rules += [rule.renamed(c, f) for rule in layer.rules]
        state |= {c(s) for s in layer.state}
        ignored.update({f(k): v for k, v in layer.ignored.items()})
    return Layout(
        name, canonical, framework, tuple(rules), frozenset(state), ignored, layers=layers
    )
