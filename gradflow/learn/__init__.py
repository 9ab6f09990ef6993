"""Learned models beyond a cell and a readout: encoder-decoder, CNN-LSTM, a stacked LSTM with dropout
on chosen edges, built on the ``Cell`` seam; the linear reference score of a feed-forward task; the
``Monitor`` of a user's own training loop.

Example::

    from gradflow.learn import Seq2Seq, copy_batch
    model = Seq2Seq(cells.get("lstm", hidden_size=64), cells.get("lstm", hidden_size=64), symbols=8)
    loss, acc = model.losses(model.init(jax.random.key(0)), *copy_batch(src, 8, reverse=True))
"""

from gradflow.learn.cnn_lstm import CNNLSTM as CNNLSTM
from gradflow.learn.cnn_lstm import FrameEncoder as FrameEncoder
from gradflow.learn.cnn_lstm import blob_frames as blob_frames
from gradflow.learn.depth import least_squares_ratio as least_squares_ratio
from gradflow.learn.dropout import dropout_lstm_stack as dropout_lstm_stack
from gradflow.learn.monitor import Detector as Detector
from gradflow.learn.monitor import Monitor as Monitor
from gradflow.learn.monitor import Thresholds as Thresholds
from gradflow.learn.monitor import flow_stats as flow_stats
from gradflow.learn.monitor import grad_norms as grad_norms
from gradflow.learn.seq2seq import Seq2Seq as Seq2Seq
from gradflow.learn.seq2seq import copy_batch as copy_batch
from gradflow.learn.seq2seq import fit_copy as fit_copy
from gradflow.learn.seq2seq import needed_position as needed_position
from gradflow.learn.seq2seq import position_cross_entropy as position_cross_entropy
from gradflow.learn.seq2seq import random_tokens as random_tokens
