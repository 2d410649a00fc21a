"""psgdlib: preconditioned SGD (Li 2015, 2016) for recurrent networks.

* :mod:`psgdlib.preconditioners` -- ``Dense``, ``Kron``, ``Diag`` fitted on criterion (3).
* :mod:`psgdlib.pairs` -- the pairs ``(v, h)``: ``hvp``, ``finite_difference``, ``whitening``.
* :class:`psgdlib.PSGD` -- a ``torch.optim`` optimizer for update (4).
* :mod:`psgdlib.models` -- the RNN of eq. (1) and the 2D RNN of Experiment 3.
* :mod:`psgdlib.tasks` -- the synthetic problems; :mod:`psgdlib.loop` -- the one training loop
  (with :mod:`psgdlib.train` for the synthetic problems and :mod:`psgdlib.epochs` for MNIST);
  :mod:`psgdlib.results` -- the result schema; :mod:`psgdlib.runner`, :mod:`psgdlib.tables`,
  :mod:`psgdlib.curves`, :mod:`psgdlib.plotting` -- runs, tables, curves and plots;
  :mod:`psgdlib.pathological`, :mod:`psgdlib.fig1`, :mod:`psgdlib.mnist` -- each experiment's
  configs; :mod:`psgdlib.experiments` -- the command line.
"""
from .optim import PSGD, NonFiniteStepError
from .preconditioners import Dense, Diag, Kron

__version__ = "0.1.0"
__all__ = ["PSGD", "NonFiniteStepError", "Dense", "Kron", "Diag", "__version__"]
