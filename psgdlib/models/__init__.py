"""Models: the RNN of eq. (1), an LSTM baseline and the two-dimensional RNN of Experiment 3."""
from .lstm import LSTM
from .rnn import RNN
from .rnn2d import RNN2D

__all__ = ["LSTM", "RNN", "RNN2D"]
