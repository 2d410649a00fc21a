"""Models: the RNN of eq. (1) and the two-dimensional RNN of Experiment 3."""
from .rnn import RNN

__all__ = ["RNN"]
