"""The app serves every bundle: each series goes to the model its bundle's rules claim it for, with that bundle's
grid, segments, codes, colours and measurements; a series no model is for is named in one line and skipped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from test_app_support import SHARED_DATA, dciodvfy_errors, input_path, write_ultrasound

from lightweight_nets.bundle import BundleSpec
from lightweight_nets.io.tables import read_pixel_sizes
from lightweight_seg.dicom_io import InputError, selection_score
from lightweight_seg.pipeline import segment_paths
from lightweight_seg.routing import DEFAULT_BUNDLES, ModelRouter

HC18_SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "hc18" / "images" / "006_HC.png"
BUSI_IMAGE = SHARED_DATA / "busi" / "images" / "benign_1.png"


class RecordingRouter(ModelRouter):
    """The shipped bundles, recording the shape of every batch each model receives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: dict[str, list[tuple[int, ...]]] = {}

    def predictor(self, spec):
        inner, batches = super().predictor(spec), self.batches.setdefault(spec.id, [])

        class Recording:
            backend = inner.backend

            def predict(self, batch):
                batches.append(tuple(batch.shape))
                return inner.predict(batch)

        return Recording()


@pytest.fixture
def mixed_study(tmp_path) -> Path:
    """An obstetric US (HC18 sample, calibrated), a breast US (a real BUSI image, BodyPartExamined BREAST) and a
    chest CT series (no shipped model is for the chest) in one folder."""
    folder = tmp_path / "in"
    folder.mkdir()
    pixel_size = read_pixel_sizes(HC18_SAMPLE.parents[1] / "pixel_size_and_hc.csv")[HC18_SAMPLE.name]
    write_ultrasound(folder / "ob.dcm", HC18_SAMPLE, "ABDOMEN", "OB ultrasound", pixel_size_mm=pixel_size)
    write_ultrasound(folder / "breast.dcm", BUSI_IMAGE, "BREAST", "US breast right", pixel_size_mm=0.1)
    (folder / "ct").mkdir()
    for path in sorted(input_path("CT5N").iterdir()):
        ds = pydicom.dcmread(path)
        ds.BodyPartExamined = "CHEST"
        ds.save_as(folder / "ct" / path.name)
    return folder


def _reports(result) -> dict[str, dict]:
    return {output.model: json.loads(output.report_path.read_text()) for output in result.outputs}


def test_each_series_goes_to_its_model_with_that_models_contract(mixed_study, tmp_path):
    models = RecordingRouter.from_path()
    result = segment_paths(mixed_study, tmp_path / "out", models=models)
    assert result.errors == []
    reports = _reports(result)
    assert set(reports) == {"fetal_head_us", "breast_lesion_us"}
    ct_uid = pydicom.dcmread(next((mixed_study / "ct").iterdir()), stop_before_pixels=True).SeriesInstanceUID
    assert result.skipped == [
        (
            ct_uid,
            f"series {ct_uid}: no model for CT/CHEST "
            "(serving breast_lesion_us, fetal_head_us, hippocampus_mr, sarcoma_ct)",
        )
    ]
    # each model received its own grid
    assert {shape[2:] for shape in models.batches["breast_lesion_us"]} == {(128, 128)}
    assert {shape[2:] for shape in models.batches["fetal_head_us"]} == {(128, 128)}
    # measurements as each bundle asks: a head circumference for the head only
    (head,), (lesion,) = reports["fetal_head_us"]["segments"], reports["breast_lesion_us"]["segments"]
    hc = head["head_circumference_mm_per_frame"][0]
    assert head["label"] == "fetal head" and abs(hc - 67.84) / 67.84 < 0.15  # the sonographer's; this model: 60.8
    assert lesion["label"] == "breast lesion" and lesion["area_mm2_per_frame"][0] > 0
    assert "head_circumference_mm_per_frame" not in lesion
    # the SEGs: the bundle's label, codes and colour; model name and version; distinct series in one study
    segs = {output.model: hd.seg.segread(output.seg_path) for output in result.outputs}
    for bundle_id, seg in segs.items():
        spec = BundleSpec.load(DEFAULT_BUNDLES / bundle_id)
        (expected,), (description,) = spec.segments, seg.SegmentSequence
        assert description.SegmentLabel == expected.label
        assert description.SegmentedPropertyCategoryCodeSequence[0].CodeValue == expected.category.value
        assert description.SegmentedPropertyTypeCodeSequence[0].CodeValue == expected.type.value
        assert hd.color.CIELabColor.from_dicom_value(
            description.RecommendedDisplayCIELabValue
        ).to_rgb() == pytest.approx(expected.color_rgb, abs=1)
        algorithm = description.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (spec.name, spec.version)
        assert expected.label in seg.SeriesDescription and bundle_id in seg.SeriesDescription
        assert dciodvfy_errors(next(o.seg_path for o in result.outputs if o.model == bundle_id)) == []
    assert segs["breast_lesion_us"].SegmentSequence[0].AnatomicRegionSequence[0].CodeValue == "76752008"


def test_two_segs_of_one_study_differ_in_series_number_and_description(models, tmp_path):
    first = pydicom.dcmread(input_path("OBXXXX1A.dcm"))
    second = pydicom.dcmread(input_path("OBXXXX1A.dcm"))
    second.SeriesInstanceUID, second.SOPInstanceUID, second.SeriesNumber = (
        pydicom.uid.generate_uid(),
        pydicom.uid.generate_uid(),
        2,
    )
    (tmp_path / "in").mkdir()
    first.save_as(tmp_path / "in" / "1.dcm")
    second.save_as(tmp_path / "in" / "2.dcm")
    result = segment_paths(tmp_path / "in", tmp_path / "out", models=models)
    segs = [pydicom.dcmread(output.seg_path) for output in result.outputs]
    assert len(segs) == 2 and segs[0].StudyInstanceUID == segs[1].StudyInstanceUID
    assert len({seg.SeriesNumber for seg in segs}) == 2 and len({seg.SeriesDescription for seg in segs}) == 2


def test_forcing_a_model(mixed_study, tmp_path):
    """--model NAME: every series goes to that bundle, whatever its rules say (the CT included)."""
    result = segment_paths(mixed_study, tmp_path / "out", models=ModelRouter.from_path(force="breast_lesion_us"))
    assert result.skipped == [] and result.errors == []
    assert [output.model for output in result.outputs] == ["breast_lesion_us"] * 3
    with pytest.raises(InputError, match="--model spleen: no such bundle"):
        ModelRouter.from_path(force="spleen")


def test_a_single_bundle_serves_only_what_its_rules_claim(mixed_study, tmp_path):
    models = ModelRouter.from_path(DEFAULT_BUNDLES / "fetal_head_us")
    result = segment_paths(mixed_study, tmp_path / "out", models=models)
    assert [output.model for output in result.outputs] == ["fetal_head_us"]
    assert sorted(reason.split(": ", 1)[1] for _, reason in result.skipped) == [
        "no model for CT/CHEST (serving fetal_head_us)",
        "no model for US/BREAST (serving fetal_head_us)",
    ]


def test_a_folder_of_bundles_with_a_copied_bundle(tmp_path, mixed_study):
    """-m may name any folder of bundles: a copy of the shipped breast bundle alone in one."""
    shutil.copytree(DEFAULT_BUNDLES / "breast_lesion_us", tmp_path / "models" / "breast_lesion_us")
    models = ModelRouter.from_path(tmp_path / "models")
    assert list(models.bundles) == ["breast_lesion_us"]
    result = segment_paths(mixed_study, tmp_path / "out", models=models)
    assert [output.model for output in result.outputs] == ["breast_lesion_us"]


def _header(**attributes) -> Dataset:
    ds = Dataset()
    ds.Modality = attributes.pop("Modality", "US")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ({"BodyPartExamined": "BREAST"}, "breast_lesion_us"),
        ({"BodyPartExamined": "PELVIS"}, "fetal_head_us"),
        ({"BodyPartExamined": "ABDOMEN"}, "fetal_head_us"),
        ({"StudyDescription": "US OB 2nd trimester"}, "fetal_head_us"),
        ({}, "fetal_head_us"),  # no body part at all
        ({"BodyPartExamined": ""}, "fetal_head_us"),  # present but empty
        ({"StudyDescription": "Breast ultrasound"}, "breast_lesion_us"),  # beats "no body part"
        ({"BodyPartExamined": "THYROID"}, None),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "OBSTETRICAL"], "BodyPartExamined": "HEAD"}, "fetal_head_us"),
        ({"Modality": "CT", "BodyPartExamined": "EXTREMITY"}, "sarcoma_ct"),
        ({"Modality": "CT"}, None),  # a sarcoma model on a CT of unknown region would invent a tumour
        ({"Modality": "CT", "BodyPartExamined": "CHEST"}, None),
        ({"Modality": "MR"}, None),
        ({"Modality": "MR", "BodyPartExamined": "BRAIN"}, "hippocampus_mr"),
        ({"Modality": "MR", "StudyDescription": "MRI brain"}, "hippocampus_mr"),
        ({"Modality": "MR", "BodyPartExamined": "EXTREMITY"}, None),
    ],
    ids=lambda value: str(value),
)
def test_routing_rules_of_the_shipped_bundles(models, attributes, expected):
    spec, reason = models.route("1.2.3", _header(**attributes))
    assert (spec.id if spec else None) == expected, reason


def test_anatomic_region_sequence_routes_to_the_breast_model(models):
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "80248007", "SCT", "Left breast"
    spec, _ = models.route("1.2.3", _header(AnatomicRegionSequence=[region]))
    assert spec.id == "breast_lesion_us"


def test_equal_matches_are_reported_not_guessed(models):
    """A breast body part with an obstetric study description: both bundles' rules match two attributes."""
    spec, reason = models.route("1.2.3", _header(BodyPartExamined="BREAST", StudyDescription="OB follow-up"))
    assert spec is None
    assert reason == (
        "series 1.2.3: US/BREAST matches the rules of breast_lesion_us and fetal_head_us equally; "
        "choose one with --model"
    )


def test_selection_score_counts_present_conditions_only():
    rules = [
        {"name": "a", "conditions": {"Modality": "US", "BodyPartExamined": None}},
        {"name": "b", "conditions": {"Modality": "US", "StudyDescription": "breast"}},
    ]
    assert selection_score(_header(), rules) == 1
    assert selection_score(_header(StudyDescription="Breast"), rules) == 2
    assert selection_score(_header(BodyPartExamined="X", StudyDescription="knee"), rules) is None


def test_the_listener_keeps_each_loaded_model(models):
    """One router serves all series: a model is loaded once, on first use, and the same object is reused."""
    spec = models.bundles["breast_lesion_us"]
    assert models.predictor(spec) is models.predictor(spec)
    assert set(models.warm_up()) == {"breast_lesion_us", "fetal_head_us", "hippocampus_mr", "sarcoma_ct"}


def test_a_bundle_without_its_model_fails_at_start_up(tmp_path):
    shutil.copytree(
        DEFAULT_BUNDLES / "fetal_head_us", tmp_path / "fetal_head_us", ignore=shutil.ignore_patterns("model.*")
    )
    with pytest.raises(InputError, match="no model file"):
        ModelRouter.from_path(tmp_path)


def test_keep_all_components_overrides_every_bundle():
    models = ModelRouter.from_path(keep_all_components=True)
    assert not any(spec.postprocessing.keep_largest for spec in models.bundles.values())
    assert models.bundles["fetal_head_us"].preprocessing.spatial_size == (128, 128)
    assert np.isclose(models.bundles["fetal_head_us"].postprocessing.threshold, 0.5)
