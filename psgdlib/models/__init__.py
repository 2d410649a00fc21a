"""Models: the RNN of eq. (1) and the two-dimensional RNN of Experiment 3."""
from .rnn import RNN
from .rnn2d import RNN2D

__all__ = ["RNN", "RNN2D"]
