"""The intervention probe: what the paste test needs from the model and the dataset, with its cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from spray.analysis.scoring.ordering import rendezvous_pairs


class PredictionCache(Protocol):
    """Predicted classes (and one class's logit) of pasted images, by a key that determines the image (see
    :class:`InterventionProbe`)."""

    def get_many(self, keys: Sequence[str]) -> dict[str, int]:
        """The cached predictions among ``keys`` (missing keys are left out)."""
        ...

    def put_many(self, items: Mapping[str, int]) -> None:
        """Store predictions."""
        ...

    def get_logits(self, keys: Sequence[str]) -> dict[str, tuple[int, float]]:
        """The cached ``(predicted class, class logit)`` among ``keys`` (each key also names the class)."""
        ...

    def put_logits(self, items: Mapping[str, tuple[int, float]]) -> None:
        """Store ``(predicted class, class logit)`` per key."""
        ...


@dataclass
class InterventionProbe:
    """What the intervention (paste) test needs; built by the audit from the dataset.

    Attributes
    ----------
    predict : Callable[[torch.Tensor], torch.Tensor]
        ``(B, C, H, W)`` model inputs -> ``(B,)`` predicted class.
    load_inputs : Callable[[list[str]], torch.Tensor]
        Sample ids -> ``(B, C, H, W)`` model inputs (normalised as the model expects).
    other_ids : list[str]
        Ids of images of OTHER classes to paste into (already sampled, seeded).
    other_labels : np.ndarray
        ``(m,)`` their labels.
    content_keys : Mapping[str, str], optional
        Sample id -> content hash. Donors are then picked and paired by content (stable when samples
        are added), and ``cache`` is used.
    cache : PredictionCache, optional
        Predictions of pasted images keyed by (target content, donor content, grid mask). The key
        determines the pasted image; the model and the input transform must be fixed per cache (the
        audit keeps one cache per model and LRP/transform settings). Only used with ``content_keys``.
    logits : Callable[[torch.Tensor], torch.Tensor], optional
        ``(B, C, H, W)`` model inputs -> ``(B, K)`` logits. Enables the removal test (the members' logit
        drop when their hot pixels are replaced); without it only the paste test runs.
    concept_maps : Callable[[torch.Tensor, int, list[int], int], np.ndarray], optional
        ``(inputs (B, C, H, W), class index, channels, number of channels)`` -> ``(B, h, w)`` float32
        concept-conditional heatmaps of the class logit on the analysis grid (only the relevance of
        ``channels`` of the concept layer propagated to the input). Enables the intervention test of
        concept-only findings (:mod:`spray.analysis.concept_test`).
    """

    predict: Callable[[torch.Tensor], torch.Tensor]
    load_inputs: Callable[[list[str]], torch.Tensor]
    other_ids: list[str]
    other_labels: np.ndarray
    content_keys: Mapping[str, str] | None = None
    cache: PredictionCache | None = None
    logits: Callable[[torch.Tensor], torch.Tensor] | None = None
    concept_maps: Callable[[torch.Tensor, int, list[int], int], np.ndarray] | None = None
    # Target images loaded so far: every tested cluster pastes into the same targets (a probe serves
    # one class, so this holds at most ``intervention_samples`` inputs, as a preloaded batch would).
    _targets_loaded: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    # Logits of images named by a key that determines them (:meth:`memo_logits`); one class's worth.
    _memo: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def key(self, sample_id: str) -> str:
        """The content hash of a sample when known, else its id (prefixed so the two never collide)."""
        if self.content_keys is not None and sample_id in self.content_keys:
            return self.content_keys[sample_id]
        return f"id:{sample_id}"

    def _cache_keys(
        self, target_ids: Sequence[str], donor_ids: Sequence[str] | None, masks: np.ndarray | None
    ) -> list[str]:
        """One cache key per pasted image: target content, donor content and the mask's bits."""
        keys = []
        for j, target in enumerate(target_ids):
            tk = self.key(target)
            if donor_ids is None or masks is None:
                keys.append(f"plain|{tk}")
            else:
                mk = hashlib.blake2b(np.packbits(masks[j]).tobytes(), digest_size=8).hexdigest()
                keys.append(f"paste|{tk}|{self.key(donor_ids[j])}|{masks[j].shape}|{mk}")
        return keys

    def predict_pasted(
        self,
        target_ids: Sequence[str],
        donor_ids: Sequence[str] | None,
        masks: np.ndarray | None,
        donor_inputs: Mapping[str, torch.Tensor] | None = None,
    ) -> np.ndarray:
        """Predicted class of each target with its donor's pixels pasted inside its grid mask.

        Parameters
        ----------
        target_ids : Sequence[str]
            ``m`` target images.
        donor_ids : Sequence[str], optional
            ``m`` donors, one per target; None predicts the targets as they are.
        masks : np.ndarray, optional
            ``(m, h, w)`` bool masks on the analysis grid, upsampled (nearest) to the input size.
        donor_inputs : Mapping[str, torch.Tensor], optional
            Donor inputs the caller has already loaded (by id); the others are loaded here.

        Returns
        -------
        np.ndarray
            ``(m,)`` int64 predicted classes. Cached predictions are reused; only the others are
            loaded and run through the model.
        """
        out = np.zeros(len(target_ids), dtype=np.int64)
        keys, cache = self._cached_keys(target_ids, donor_ids, masks, "")
        found = cache.get_many(keys) if cache is not None else {}
        for j, k in enumerate(keys):
            out[j] = found.get(k, 0)
        todo = [j for j in range(len(target_ids)) if not keys or keys[j] not in found]
        if not todo:
            return out
        x = self._pasted(target_ids, donor_ids, masks, donor_inputs, todo)
        with torch.no_grad():
            pred = np.asarray(self.predict(x).cpu().numpy(), dtype=np.int64)
        out[todo] = pred
        if cache is not None:
            cache.put_many({keys[j]: int(p) for j, p in zip(todo, pred, strict=True)})
        return out

    def _cached_keys(
        self,
        target_ids: Sequence[str],
        donor_ids: Sequence[str] | None,
        masks: np.ndarray | None,
        suffix: str,
    ) -> tuple[list[str], PredictionCache | None]:
        """The cache keys of the pasted images (each with ``suffix``) and the cache; no keys and None when
        the probe has no cache or no content keys (then every image is run through the model)."""
        if self.cache is None or self.content_keys is None:
            return [], None
        return [k + suffix for k in self._cache_keys(target_ids, donor_ids, masks)], self.cache

    def _pasted(
        self,
        target_ids: Sequence[str],
        donor_ids: Sequence[str] | None,
        masks: np.ndarray | None,
        donor_inputs: Mapping[str, torch.Tensor] | None,
        todo: list[int],
    ) -> torch.Tensor:
        """``(len(todo), C, H, W)`` the targets ``todo`` with their donors' pixels pasted in their masks."""
        targets = self.target_inputs([target_ids[j] for j in todo])
        if donor_ids is None or masks is None:
            return targets
        loaded = dict(donor_inputs or {})
        missing = sorted({donor_ids[j] for j in todo} - loaded.keys())
        if missing:
            loaded.update(zip(missing, self.load_inputs(missing), strict=True))
        donors = torch.stack([loaded[donor_ids[j]] for j in todo])
        return fill_masked(targets, np.asarray(masks)[todo], donors)

    def memo_logits(self, keys: Sequence[str], make: Callable[[list[int]], torch.Tensor]) -> np.ndarray:
        """``(m, K)`` float64 logits of ``m`` images named by ``keys``, each key determining its image: only the
        images this probe has not run before are built, by ``make(positions)`` ``(len(positions), C, H,
        W)``, and run through the model (needs :attr:`logits`)."""
        assert self.logits is not None
        if not keys:
            return np.zeros((0, 0))
        first: dict[str, int] = {}  # each new key's first position
        for j, k in enumerate(keys):
            if k not in self._memo:
                first.setdefault(k, j)
        if first:
            with torch.no_grad():
                z = self.logits(make(list(first.values()))).float().cpu().numpy()
            self._memo.update(zip(first, z.astype(np.float64), strict=True))
        return np.stack([self._memo[k] for k in keys])

    def target_inputs(self, target_ids: Sequence[str]) -> torch.Tensor:
        """``(m, C, H, W)`` the targets' inputs, loaded once per probe (every tested group writes into the
        same targets)."""
        need = [t for t in dict.fromkeys(target_ids) if t not in self._targets_loaded]
        if need:
            self._targets_loaded.update(zip(need, self.load_inputs(need), strict=True))
        return torch.stack([self._targets_loaded[t] for t in target_ids])

    def class_logits(
        self,
        class_index: int,
        target_ids: Sequence[str],
        donor_ids: Sequence[str] | None = None,
        masks: np.ndarray | None = None,
        donor_inputs: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class ``(m,)`` and class-``class_index`` logit ``(m,)`` of each target, with its
        donor's pixels pasted inside its grid mask (as :meth:`predict_pasted`; needs :attr:`logits`).
        Cached like the predictions: only the pastes not run before go through the model."""
        assert self.logits is not None
        m = len(target_ids)
        pred, logit = np.zeros(m, dtype=np.int64), np.zeros(m, dtype=np.float64)
        keys, cache = self._cached_keys(target_ids, donor_ids, masks, f"|class{class_index}")
        found = cache.get_logits(keys) if cache is not None else {}
        for j, k in enumerate(keys):
            pred[j], logit[j] = found.get(k, (0, 0.0))
        todo = [j for j in range(m) if not keys or keys[j] not in found]
        if not todo:
            return pred, logit
        x = self._pasted(target_ids, donor_ids, masks, donor_inputs, todo)
        with torch.no_grad():
            z = self.logits(x).float().cpu()
        pred[todo] = z.argmax(1).numpy()
        logit[todo] = z[:, class_index].numpy().astype(np.float64)
        if cache is not None:
            cache.put_logits({keys[j]: (int(pred[j]), float(logit[j])) for j in todo})
        return pred, logit

    def paste_flips(
        self,
        class_index: int,
        donor_ids: list[str],
        donor_masks: np.ndarray,
        target_ids: list[str],
        donor_inputs: torch.Tensor,
    ) -> np.ndarray:
        """Paste donor pixels (inside their grid masks, upsampled) into targets; ``(m,)`` bool "now class".

        Each target gets one donor by rendezvous hashing of their contents, so a donor set that changed
        by a few samples since the last run changes only a few pairs (and the rest come from the cache).
        """
        pick = self.pairs(target_ids, donor_ids)
        pred = self.predict_pasted(
            target_ids,
            [donor_ids[i] for i in pick],
            np.asarray(donor_masks)[pick],
            donor_inputs=dict(zip(donor_ids, donor_inputs, strict=True)),
        )
        return np.asarray(pred == class_index)

    def pairs(self, target_ids: Sequence[str], donor_ids: Sequence[str]) -> np.ndarray:
        """``(m,)`` the donor of each target, by rendezvous hashing of their contents."""
        return rendezvous_pairs([self.key(t) for t in target_ids], [self.key(d) for d in donor_ids])


def fill_masked(x: torch.Tensor, masks: np.ndarray, fill: torch.Tensor) -> torch.Tensor:
    """``x`` ``(n, C, H, W)`` with the pixels inside each grid mask ``(n, h, w)`` (upsampled, nearest)
    replaced by ``fill`` ``(C, H, W)`` or ``(n, C, H, W)``."""
    mk = torch.from_numpy(np.ascontiguousarray(masks).astype(np.float32))[:, None]
    mk = F.interpolate(mk, size=tuple(x.shape[-2:]), mode="nearest").bool()
    return torch.where(mk, fill.to(x.dtype), x)


class Targets:
    """Other-class images that the paste test writes into (ids; images are loaded only when needed).

    Which of them the model already assigns to the class is predicted on first use only: a class whose
    candidates all fail the appearance gate runs no forward pass at all.
    """

    def __init__(self, probe: InterventionProbe, class_index: int, ids: list[str]) -> None:
        self.ids = ids
        self._probe = probe
        self._class_index = class_index
        self._already: np.ndarray | None = None
        self._base: np.ndarray | None = None

    def base_logit(self) -> np.ndarray:
        """``(m,)`` the class logit of each target as it is (needs the probe's logits)."""
        if self._base is None:
            self._base = self._probe.class_logits(self._class_index, self.ids)[1]
        return self._base

    @property
    def already(self) -> np.ndarray:
        """``(m,)`` bool: already predicted as the class (cannot flip to it; excluded)."""
        if self._already is None:
            pred = self._probe.predict_pasted(self.ids, None, None)
            self._already = np.asarray(pred == self._class_index)
        return self._already

    @classmethod
    def load(cls, probe: InterventionProbe, class_index: int, limit: int) -> Targets | None:
        """The first ``limit`` of the probe's other-class images; None when it has none."""
        keep = np.asarray(probe.other_labels) != class_index
        ids = [i for i, ok in zip(probe.other_ids, keep, strict=True) if ok][:limit]
        return cls(probe, class_index, ids) if ids else None
