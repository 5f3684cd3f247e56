"""Order of the examples in the sphinx-gallery index.

Examples listed in ``FIRST`` come first, in that order (a reading path from
the metrics to fine-tuning); every other example follows, quick ``plot_*``
ones before ``long_*`` ones, alphabetically within each group. Referenced
from ``docs/conf.py`` by its qualified name, so the Sphinx environment stays
picklable.
"""

import os

FIRST = (
    "plot_nc_synthetic.py",
    "plot_layerwise_collapse.py",
    "plot_few_shot_transfer.py",
    "plot_rank_feature_maps.py",
    "plot_rank_backbones.py",
)


class ExampleOrder:
    """Sort key for ``sphinx_gallery_conf["within_subsection_order"]``."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = os.path.basename(filename)
        if name in FIRST:
            return (0, FIRST.index(name), name)
        return (1 if name.startswith("plot_") else 2, 0, name)

    def __repr__(self):
        return f"<{self.__class__.__name__}>"
