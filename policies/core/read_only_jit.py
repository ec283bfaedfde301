"""``jit`` for functions that only read a model: its state goes into the compiled program and
never comes out.

``nnx.jit`` returns every variable of the modules it is given, so that a function may change
them: XLA then copies each parameter to an output buffer on every call (a served SmolLM2
RM: 274 copies, about a tenth of a scoring call), and Flax walks the module graph in Python
on the way in and on the way out. A scoring, evaluation or sampling function changes
nothing, so here the model is split once per call (``nnx.split``; ``f.bind(model)`` splits it
once for a loop of calls), its state passed in and its graph definition a static argument:
the functional form of Flax's performance guide.
Models of one structure share their compiled programs, as with ``nnx.jit``. A function that
does change a variable raises while it is traced, rather than losing the change.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
from flax import nnx


def read_only_jit(fn: Callable | None = None, *, static_argnames: Sequence[str] = ()):
  """Decorates ``fn(model, *args, **kwargs)``, which reads ``model`` (an ``nnx.Module``) and
  returns arrays, as ``jax.jit`` would; ``static_argnames`` as ``jax.jit``'s."""
  if fn is None:
    return functools.partial(read_only_jit, static_argnames=static_argnames)

  def pure(graphdef, state, *args, **kwargs):
    model = nnx.merge(graphdef, state)
    before = jax.tree.leaves(nnx.state(model))
    out = fn(model, *args, **kwargs)
    after = jax.tree.leaves(nnx.state(model))
    if len(before) != len(after) or any(a is not b for a, b in zip(before, after)):
      raise ValueError(f"{fn.__name__} changes its model's variables; read_only_jit would "
                       "lose the change: use nnx.jit")
    return out

  compiled = jax.jit(pure, static_argnums=0, static_argnames=tuple(static_argnames))

  def bind(model):
    """``fn`` with ``model`` split once: for a loop of calls over one model, or calls from
    several threads, which then share one split instead of walking the graph each."""
    return functools.partial(compiled, *nnx.split(model))

  @functools.wraps(fn)
  def call(model, *args, **kwargs):
    return bind(model)(*args, **kwargs)

  call.bind = bind
  # as jax.jit's: ``f.lower(model, *args).compile()`` to inspect the program
  call.lower = lambda model, *args, **kwargs: compiled.lower(*nnx.split(model), *args, **kwargs)
  return call
