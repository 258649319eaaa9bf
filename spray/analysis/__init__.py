"""Spectral relevance analysis: heatmaps → features → kNN graph → spectral embedding → clusters across
every k → 2-D map → suspicion scores with evidence.

Nothing here reads files or touches the model's data loader: every stage takes arrays and named records
(:mod:`spray.records`) and returns records.
"""
