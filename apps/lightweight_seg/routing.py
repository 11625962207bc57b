"""Which model segments a series: every bundle the app serves, each series routed to one by the bundle's rules.

Each bundle's ``series_rules`` (its ``configs/inference.json``, documented in its model card) are selections in the
Deploy SDK's format. A series goes to the bundle whose matching rule describes it most specifically (see
:func:`~lightweight_seg.dicom_io.selection_score`); a series no bundle matches, or two bundles match equally, is
skipped with a one-line reason. ``force`` sends every series to one named bundle instead. Each model is loaded
on first use and kept, so a listener serves every series warm.
"""

from __future__ import annotations

import dataclasses
import threading
from importlib import resources
from pathlib import Path

from pydicom.dataset import Dataset

from lightweight_nets.bundle import BundleError, BundleSpec, find_bundles
from lightweight_nets.inference.predictors import Predictor
from lightweight_nets.transforms import Postprocessing
from lightweight_seg.dicom_io import InputError, selection_score

__all__ = ["DEFAULT_BUNDLES", "ModelRouter"]

# The bundles the app serves without -m: package data of lightweight_seg. In the repository, bundles/ is a link to
# bundle/, so a checkout or an editable install serves bundle/ itself; a wheel holds a copy (see pyproject.toml).
DEFAULT_BUNDLES = Path(str(resources.files("lightweight_seg") / "bundles")).resolve()


class ModelRouter:
    """The bundles the app serves and their loaded models.

    Args:
        bundles: the served bundles (their ids must differ).
        force: the id of the bundle that gets every series, whatever its rules say.
        keep_all_components: keep every connected component, whatever a bundle's post-processing says.
        backend: the inference backend of every model ("auto": each bundle's own choice, else the fastest it ships).
        threads: CPU threads per model (default: all this process may use).
    """

    def __init__(
        self,
        bundles: list[BundleSpec],
        force: str | None = None,
        keep_all_components: bool = False,
        backend: str = "auto",
        threads: int | None = None,
    ):
        ids = [spec.id for spec in bundles]
        if len(set(ids)) != len(ids):
            raise InputError(f"two served bundles share a folder name: {', '.join(ids)}")
        if force is not None and force not in ids:
            raise InputError(
                f"--model {force}: no such bundle (serving: {', '.join(ids)}; "
                "-m takes the path of a bundle or a folder of bundles)"
            )
        for spec in bundles:  # a bundle without its model fails at start-up, not on its first series
            try:
                spec.served_backend(backend)
            except (OSError, ValueError) as error:
                raise InputError(str(error)) from None
        if keep_all_components:
            bundles = [
                dataclasses.replace(
                    spec,
                    postprocessing=Postprocessing(
                        spec.postprocessing.activation,
                        spec.postprocessing.threshold,
                        keep_largest=False,
                        presence=spec.postprocessing.presence,
                    ),
                )
                for spec in bundles
            ]
        self.bundles = {spec.id: spec for spec in bundles}
        self.force, self.backend, self.threads = force, backend, threads
        self._predictors: dict[str, Predictor] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: str | Path | None = None, **kwargs) -> ModelRouter:
        """The bundle at ``path``, or every bundle in that folder (default: :data:`DEFAULT_BUNDLES`, the bundles
        this package ships); a bad bundle is an :class:`~lightweight_seg.dicom_io.InputError` naming its file."""
        try:
            return cls(find_bundles(path or DEFAULT_BUNDLES), **kwargs)
        except BundleError as error:
            raise InputError(str(error)) from None

    def route(self, series_uid: str, header: Dataset) -> tuple[BundleSpec | None, str | None]:
        """The bundle for a series (given by one of its headers), or None and the one-line reason it is skipped."""
        if self.force is not None:
            return self.bundles[self.force], None
        scores = {
            bundle_id: selection_score(header, list(spec.series_rules)) for bundle_id, spec in self.bundles.items()
        }
        scores = {bundle_id: score for bundle_id, score in scores.items() if score is not None}
        what = f"{header.get('Modality') or 'no modality'}/{header.get('BodyPartExamined') or 'no body part'}"
        if not scores:
            return None, f"series {series_uid}: no model for {what} (serving {', '.join(self.bundles)})"
        best = max(scores.values())
        winners = [bundle_id for bundle_id, score in scores.items() if score == best]
        if len(winners) > 1:
            return None, (
                f"series {series_uid}: {what} matches the rules of {' and '.join(winners)} equally; "
                "choose one with --model"
            )
        return self.bundles[winners[0]], None

    def predictor(self, spec: BundleSpec) -> Predictor:
        """The bundle's model, loaded once and kept (thread-safe)."""
        with self._lock:
            if spec.id not in self._predictors:
                try:
                    self._predictors[spec.id] = spec.load_predictor(self.backend, self.threads)
                except (OSError, ValueError) as error:  # no or unloadable model file: one line
                    raise InputError(str(error)) from None
            return self._predictors[spec.id]

    def warm_up(self) -> dict[str, str]:
        """Load every served model now (a listener does, so the first series waits for none); their backends."""
        return {bundle_id: self.predictor(spec).backend for bundle_id, spec in self.bundles.items()}
