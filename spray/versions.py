"""Versions of what spray stores, each changed exactly when the thing it names changes.

Two results are cached or published and reused across runs, so each has its own version:

- :data:`LRP_VERSION`: the per-sample results of the batch stage (pooled relevance, probabilities,
  predictions, thumbnails). Bump it whenever a heatmap for the same model, input and settings would come
  out different (a rule, a canonizer, the pooling, the thumbnail, the input transform's code). It is part
  of the cache directory key and of the run id: after an upgrade every heatmap is recomputed.
- :data:`ANALYSIS_VERSION`: everything computed from the heatmaps (normalisation, PCA, kNN graph,
  spectral embedding, k-means sweep, the 2-D map, scoring, the paste test, evidence, ranking). Bump it
  whenever a finding, a score, a flag, an evidence sentence or a cluster could change for the same
  heatmaps. It is part of the run id, not of the heatmap cache: after an upgrade the analysis reruns on
  the cached heatmaps and no LRP is recomputed.
- :data:`PASTE_VERSION`: how the paste and removal tests make an image and run it through the model (their
  cached predictions and logits). Bump it with :data:`ANALYSIS_VERSION` whenever a cached prediction could
  differ from a fresh one; an analysis change that leaves them alone keeps every cached paste.

The layout of a run folder has its own version, :data:`spray.runs.layout.LAYOUT_VERSION`.
``tests/test_golden.py`` records a fingerprint of a small fixed audit's heatmaps and findings next to
these versions and fails when an output changes while its version does not.
"""

from __future__ import annotations

import spray

# 2: images are decoded at their full bit depth and converted by mode (spray.data.decoding); a 16-bit
# image cached by version 1 was clipped.
# 3: in-place non-ReLU activations, functional products/attention/activations/norms in forward() are
# explained; z+ changes at round-off level for mixed-sign inputs.
# 4: heatmaps of inputs whose side is no multiple of batch.grid are pooled by area (every pixel counted
# once; adaptive average pooling counted pixels 0.56-3.5 times).
# 5: lrp.concept_layer auto stops at the model's global pooling: timm's MobileNetV3 family (conv_head runs
# on the pooled 1x1 map) gets its concept vectors from blocks, not conv_head (other models unchanged).
# 6: weight and spectral norm (hooks or parametrizations) are explained with the weight the model uses (the
# hook-free copy explained a stale cached weight, or refused); a sigmoid gate reshaped before its product
# (.view, .expand_as, [..., None]: timm's ECA) keeps the gate rule (it got the uniform rule); other models
# unchanged.
# 7: (B, H, W, C) concept-layer outputs are summed per channel at the last dimension (torchvision's Swin:
# 768 channels, not the grid's rows); 'auto' takes a hierarchical transformer's last stage; in-place sums
# on a rule's output (timm ResNet under AttnLRP/CPLRP) and timm's FastAdaptiveAvgPool are explained;
# exploding relevance sums are refused. CNN maps unchanged.
# 8: a module registered under several names (self.c3 = self.c2, ModuleList([block] * 2), a layer also
# grouped into a Sequential) gets its rule under every name (calls through the second name were explained
# with the plain gradient, or the first layer was refused); other models unchanged.
# 9: lrp.concept_layer auto looks inside a wrapper that holds the whole classifier (nn.Sequential(normalize,
# net), DataParallel, torch.compile, the output selector): its concept vectors were the logits. In-place
# ReLUs and clamps on a rule's output (GoogLeNet, Inception-v3, F.relu(fc(x), inplace=True)) run, where
# they stopped with autograd's error; maps of models that ran before are unchanged.
# 10: a softmax output in an element-wise product gets the gate rule (selective-kernel and split-attention
#     branch weights); marks of gates and attention weights carry through reshapes; lrp.concept_layer auto
#     passes over a class-score convolution (SqueezeNet) and auxiliary classifiers (GoogLeNet).
# 11: F.normalize is explained with the norm held constant (SwinV2's cosine attention: q and k had no relevance);
#     products of two activations in tensordot, baddbmm, addbmm and addmm get the uniform rule.
# 12: lrp.concept_layer auto passes over the class-score convolution of an all-convolutional classifier pooled
#     in forward() and takes a last attention stage of one block (MaxViT-nano, DaViT); a torchvision block's ReLU named
#     as the concept layer runs (it was fused away). Maps unchanged; concept vectors of those models change.
# 13: timm's re-parameterisable blocks (RepVGG, MobileOne, FastViT, RepViT, RepGhost, GhostNetV2, SHViT, iFormer,
#     EfficientViM, NextViT) are explained in their inference form (RepVGG, MobileOne, FastViT and RepViT were
#     refused); MetaFormer's StarReLU and SquaredReLU take Pass as activations (PoolFormer-v2, ConvFormer and
#     CAFormer were refused); maps of those models change, other models unchanged.
LRP_VERSION = 13
#: How spray.model_identity.model_hash fingerprints a model; runs record it (``hashes["model_hash_version"]``)
#: so that an older spray's fingerprint is not taken for other weights. 2: non-persistent buffers are covered.
#: 3: source hashed without its comments and blank lines (an edited comment is the same model).
#: 4: modules in a folder without ``__init__.py`` and in the config's ``factory_dirs`` are the user's code.
MODEL_HASH_VERSION = 4
# 2: the 2-D map is spray's numpy UMAP layout; classes of >= 5,000 rows use faiss's kNN graph.
# 3: candidates from every k and hot-spot groups, interventions on the members' hot pixels, relative
# appearance, a per-sample suspicion over every candidate (samples.parquet's score).
# 4: concept-space analysis beside the pixel space (concepts section, off by default): concept-only findings, pixel
# findings a concept cluster matches carry its evidence (space "both"), per-sample suspicion over both.
# 5: the flag's defaults chosen on the tuning split's operating curve (flag_min_appearance 0.5, removal_min_auroc
# 0.98; docs/detection.md).
# 6: a flag whose paste and removal tests both clear their margins needs relative appearance 0.55, not 0.65
# (flag_min_relative_appearance_two_routes, chosen on the tuning split; docs/detection.md).
# 7: evidence names the paste test's logit gain, says why a candidate whose test cleared its margins is not
# flagged, and states logit changes with a verb for their sign (no "lowers ... by -13.22").
# 8: the hot-spot route splits each window's log shares (scoring.hotspot_split log_share, separation 11.5; chosen on
# the tuning split, docs/detection.md); the stored hotspot_separation signal is on the log scale from here on.
# 9: a hot-spot group with a Fisher ratio >= 45 (scoring.hotspot_distinct) earns consistency credit and competes to
# represent its pattern (chosen on the tuning split, docs/detection.md).
# 10: the removal test's flag margin is 0.5 logits, not 1.0 (scoring.removal_margin, chosen on the tuning split).
# 11: the removal test's flag needs a removal AUROC of 0.94, not 0.98 (scoring.removal_min_auroc, chosen on the
# tuning split at the new margin).
# 12: with concepts.enabled, concept-only findings are tested by intervention and can be flagged
# (spray.analysis.concept_test); pixel findings are unchanged.
# 13: on colour inputs, concept-only findings also get the colour test (concepts.colour_test)
# 14: concept-only findings record where their hot pixels lie (concept_typicality, concepts.max_typicality)
# and which test met the flag rule; pixel findings are unchanged (scoring.select_superset is off by default).
# 15: concept space is analysed by default (concepts.enabled true; docs/concepts.md), concept-only findings
# weighted 0.1 in the ranking (concepts.score_weight, chosen on the tuning and development moving splits).
# 16: a flagged finding that repeats a higher-scoring flagged one's group says so in its evidence
# (scoring.ranking.note_repeats); a candidate one test alone cleared names what the other missed; the colour
# test's AUROC line says it is the colour removal's; scores, flags and order unchanged.
# 17: concept-space separation is 1 − conductance of the symmetrised kNN graph (the old count doubled the cut
# and went negative), which raises concept scores; a class whose every heatmap is zero is skipped with its
# reason; evidence states the members' own share of edges inside the group, the AUROC itself, "positive
# relevance", pixels that are the same in every image, and no null sentence without a comparison.
# 18: scoring.graded_suspicion on by default: samples.parquet's score grades the rest of a flagged
# cluster's class by its likeness to the stamp (flags, findings and their scores unchanged).
# 20: every forward pass of the paste and removal tests has the same number of rows (spray.inference.PASS_ROWS),
# so a cached paste logit equals the one a fresh run computes (an incremental run's paste gains differed from
# a fresh run's by ~1e-8); the old paste cache is not reused.
# 21: a flagged finding most of whose members are a higher-scoring flagged one's members or carriers (the same
# stamp elsewhere: one shortcut split into parts) says so in its evidence; scores, flags and order unchanged.
# 22: a region holding no relevance has a share of exactly 0 (integral-image rounding broke the AUROC's ties);
# evidence: a share never reads "0 %" or "100 %" unless it is, the removal lines count the donors tested, a
# group whose tests cleared no margin names the removal margin it missed, and pixels less alike than typical
# groups' say so.
# 23: a class is analysed in the order of its images' contents (spray.analysis_shards.class_rows), not the
# dataset's: the same images listed in another order (renamed files) gave other clusters; a candidate whose
# members include byte-identical copies of each other says how many distinct images they are.
# 24: a concept-conditional map carries only the relevance that passes the concept layer (zennit-crp's
# exclude_parallel): at a layer inside a residual branch the skip connection's relevance reached the input
# unmasked. Layers no path bypasses (the default ones) give the same maps. The approximate kNN (classes of 5,000
# rows and more) recomputes its distances from the rows: BLAS's last bits moved with threads on an AMD CPU.
# 25: the colour test of a concept-only finding has margins of its own (concepts.colour_min_auroc 0.9 and
# concepts.colour_gain_margin), chosen on the development moving splits; grey data cannot change.
# 26: a flagged pixel finding whose members and carriers are more than scoring.flag_max_fraction of its class
# is the class's own pattern and is not flagged (no carriers listed).
# 27: when most members of a flagged finding are exact copies of its stamp, the carriers' threshold takes the
#     members that carry it inexactly for the members' distance (scoring.carrier_exact, carrier_inexact_max): a
#     median of 0 admitted exact copies only, so the stamp over a few object pixels was no carrier.
# 28: evidence only: an unflagged concept-only finding says why when no test cleared its margins (and when it is
#     more than scoring.flag_max_fraction of its class); members explained for another class's logit
#     (lrp.target: pred or a class) are counted in a line.
ANALYSIS_VERSION = 28
#: The paste cache's version (``paste-a<version>.sqlite``): analysis version 20 made every paste's forward pass
#: the same size; later analysis versions made pastes the same way.
PASTE_VERSION = 22


def code_version() -> str:
    """The code part of the run id: ``lrp<L>-analysis<A>-layout<Y>-decoder<D>`` (the package version is not
    in it).

    A release that changes neither heatmaps nor findings nor the run folder (the dashboard, the CLI, the
    docs) keeps every run id, so the nightly job rightly answers "up to date" after such an upgrade. The
    decoder version is in it since it changes the pixels every result comes from (it already named the cache
    directory, but a run whose inputs decoded otherwise was kept as up to date).
    """
    from spray.data.decoding import DECODER_VERSION
    from spray.runs.layout import LAYOUT_VERSION

    return f"lrp{LRP_VERSION}-analysis{ANALYSIS_VERSION}-layout{LAYOUT_VERSION}-decoder{DECODER_VERSION}"


def version_stamp() -> dict[str, str | int]:
    """What a run records in ``summary.json`` under ``versions``."""
    from spray.runs.layout import LAYOUT_VERSION

    return {
        "spray": spray.__version__,
        "lrp": LRP_VERSION,
        "analysis": ANALYSIS_VERSION,
        "layout": LAYOUT_VERSION,
    }
