"""Per-neuron statistics: vectorised scores over all neurons and mergeable streaming reducers.

Functions take a matrix with one row per text and any trailing neuron shape and reduce over
the rows. Reducers (`MeanVar`, `WelchT`, `Stack`, `TopK`) consume batches of rows, and
`merge` combines two reducers exactly, so that sharded runs give the single-pass result.
`state_dict()` holds only CPU tensors and plain Python values (for saving, or for
`torch.distributed.all_gather_object`); `from_state_dict` rebuilds the reducer.
"""
from lensneurons.core.stats.reducers import MeanVar, Reducer, Stack, WelchT
from lensneurons.core.stats.scores import average_precision, average_precision_multi, median, row_mean, welch_t, welch_t_from_moments
from lensneurons.core.stats.topk import TopK

__all__ = [
    "average_precision",
    "average_precision_multi",
    "welch_t",
    "welch_t_from_moments",
    "median",
    "row_mean",
    "Reducer",
    "MeanVar",
    "WelchT",
    "Stack",
    "TopK",
]
