"""sknc: scikit-learn-compatible transfer learning through the lens of neural collapse.

Subpackages
-----------
metrics
    Neural-collapse metrics (NC1-NC4, CDNV), mergeable statistics and scorers.
features
    Pretrained backbones (timm or any torch module) as scikit-learn transformers.
neighbors
    Nearest-class-centre classifier.
model_selection
    Episodic few-shot splitter, fast episode evaluation, backbone ranking.
finetune
    skorch fine-tuners: linear probe, full FT, Layer FT and SCL-FT.
datasets
    Embedded default data, image folders and loaders for fetched real data.
plotting
    Matplotlib figures of the papers' claims.
parallel
    Dask: partitioned feature extraction and map-reduce NC statistics.
experiments
    ``sknc demo`` and ``sknc evaluate`` as Python functions.

The top-level package imports nothing heavy; import the subpackages you use,
e.g. ``from sknc.metrics import nc1``.
"""

__version__ = "0.2.0.dev0"

__all__ = ["__version__"]
