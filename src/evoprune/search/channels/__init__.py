"""Layer-budget search (issue 14): SA, GA and NSGA-II over how many channels each prunable group keeps.

>>> result = search_channels(model, data, ChannelSearchConfig(macs_target=0.5, metric="eq3"), seed=0)
>>> write_channel_run(result, "runs/channels")        # results.json, tables/chosen.json, front.png, keep.png

The channels inside a group are the metric's choice (scored once on the unpruned network); the search only
decides how many each group keeps, comparing allocations by validation accuracy after BatchNorm recalibration,
every one of them exactly within the MACs or parameter budget as the project's counter reports it.
"""

from evoprune.search.channels.config import ChannelGAConfig, ChannelSAConfig, ChannelSearchConfig, NSGA2Config
from evoprune.search.channels.runner import ChannelSearchResult, search_channels, write_channel_run
from evoprune.search.channels.space import Budget, ChannelSpace

__all__ = [
    "Budget",
    "ChannelGAConfig",
    "ChannelSAConfig",
    "ChannelSearchConfig",
    "ChannelSearchResult",
    "ChannelSpace",
    "NSGA2Config",
    "search_channels",
    "write_channel_run",
]
