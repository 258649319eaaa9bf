"""Suspicion scoring of SpRAy clusters: which clusters look like a Clever-Hans strategy, and why.

SpRAy papers stop at a scatter plot and leave the last step to a person ("small clusters that stand
apart are candidates"). This package ranks every cluster of a class automatically and writes the
reasons in sentences a person can check against the heatmaps and the images. Its concepts, one module
each:

* :mod:`.candidates`: every cluster of every k and the hot-spot groups, one candidate per pattern;
* :mod:`.geometry`: hot regions (windows, frames) on the analysis grid, integral images, masks;
* :mod:`.signals`: map signals of a cluster (localisation, lift, consistency, separation) and its map
  score;
* :mod:`.ordering`: seeded orders that stay stable when samples are added (donors, targets);
* :mod:`.probe`: what the paste test needs from the model and the dataset, and its cache;
* :mod:`.appearance`: how alike the members' pixels are where their relevance is;
* :mod:`.intervention`: the paste test against its same-class null;
* :mod:`.carriers`: other samples of the class that repeat a flagged cluster's stamp;
* :mod:`.verdict`: the score and the ``suspicious`` flag;
* :mod:`.evidence`: the sentences;
* :mod:`.ranking`: the run's order, and which candidates are reported as findings;
* :mod:`.findings`: :func:`score_class`, the whole of it for one class;
* :mod:`.suspicion`: a per-sample suspicion consistent with the ranked candidates.

Every tuning constant is a field of :class:`spray.config.ScoringConfig`; the calibration behind the
defaults is in ``docs/detection.md``.
"""

from spray.analysis.scoring.candidates import HOTSPOT_K, hotspot_labelling
from spray.analysis.scoring.findings import score_class
from spray.analysis.scoring.ordering import rendezvous_pairs, stable_order
from spray.analysis.scoring.probe import InterventionProbe, PredictionCache
from spray.analysis.scoring.ranking import note_repeats, rank_findings, select_findings
from spray.analysis.scoring.suspicion import sample_suspicion

__all__ = [
    "HOTSPOT_K",
    "InterventionProbe",
    "PredictionCache",
    "hotspot_labelling",
    "note_repeats",
    "rank_findings",
    "rendezvous_pairs",
    "sample_suspicion",
    "score_class",
    "select_findings",
    "stable_order",
]
