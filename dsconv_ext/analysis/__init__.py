"""How DoG-like are a model's depthwise filters? Extract, fit, cluster, label, report, plot.

    from dsconv_ext.analysis import analyze, write_analysis
    result = analyze("convnext_atto")            # or a path, an nn.Module, None (MobileNetV2)
    report, paths = write_analysis(result, "out/")

or ``dsconv-ext analyze SOURCE --out DIR``. One job per module:

* ``extract`` (+ ``onnx_source``, ``array_source``): filters and provenance from any source;
* ``filterset``, ``normalize``: per-kernel-size pools, dead filters out, zero mean, unit L2;
* ``dog_fit``: the DoG-jet fit of millions of filters; ``labels``: names from a centroid's fit;
* ``autoencoder``, ``clustering``, ``thresholds``: the 1-D-latent cosine autoencoder, latent
  intervals (or k-means), and when a filter counts as classified;
* ``bank_match``: the master-key test;
* ``pipeline``: ``analyze``; ``report``, ``figures``, ``output``: what gets written;
* ``synthetic``: filters with planted classes (tests, benchmark).
"""

from .errors import AnalysisInputError
from .extract import extract
from .filterset import FilterSet, LayerFilters
from .output import write_analysis
from .pipeline import AnalysisResult, Settings, analyze
from .thresholds import classification_threshold

__all__ = [
    "AnalysisInputError",
    "AnalysisResult",
    "FilterSet",
    "LayerFilters",
    "Settings",
    "analyze",
    "classification_threshold",
    "extract",
    "write_analysis",
]
