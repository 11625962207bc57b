"""DIMSE statuses by name: each named code means what the standard says, and answers are judged by category."""

import pytest
from pydicom.dataset import Dataset
from pynetdicom.status import STATUS_FAILURE, STATUS_SUCCESS

from lightweight_seg.pacs import dimse_status


def answer(code: int) -> Dataset:
    ds = Dataset()
    ds.Status = code
    return ds


@pytest.mark.parametrize(
    ("name", "code", "category", "meaning"),
    [
        ("SUCCESS", 0x0000, STATUS_SUCCESS, ""),
        ("OUT_OF_RESOURCES", 0xA700, STATUS_FAILURE, "Refused: Out of Resources"),
        ("DATA_SET_DOES_NOT_MATCH_SOP_CLASS", 0xA900, STATUS_FAILURE, "Data Set Does Not Match SOP Class"),
    ],
)
def test_each_name_is_its_code_in_the_storage_service_class(name, code, category, meaning):
    assert getattr(dimse_status, name) == code
    assert dimse_status.STORE[code] == (category, meaning)


@pytest.mark.parametrize(
    ("code", "done", "pending"),
    [
        (0x0000, True, False),  # success
        (0xB000, True, False),  # C-STORE warning (coercion of data elements): stored all the same
        (0xB007, True, False),  # C-STORE warning (data set does not match SOP class): stored
        (0xFF00, False, True),  # a C-FIND match, more to come
        (0xFF01, False, True),  # a C-FIND match, optional keys not supported
        (0xA700, False, False),  # out of resources
        (0xC000, False, False),  # cannot understand
        (0xFE00, False, False),  # cancelled
    ],
)
def test_answers_are_judged_by_category(code, done, pending):
    assert dimse_status.code(answer(code)) == code
    assert (dimse_status.done(answer(code)), dimse_status.pending(answer(code))) == (done, pending)


@pytest.mark.parametrize("no_answer", [None, Dataset()])  # pynetdicom's empty Dataset: aborted or timed out
def test_no_answer_is_neither_done_nor_pending(no_answer):
    assert dimse_status.code(no_answer) is None
    assert not dimse_status.done(no_answer) and not dimse_status.pending(no_answer)
    assert dimse_status.describe(no_answer) == "no answer (association aborted or timed out)"


def test_describe_names_the_code_for_its_service():
    assert dimse_status.describe(answer(0xA700)) == "0xA700 Failure: Refused: Out of Resources"
    assert dimse_status.describe(answer(0xA900), dimse_status.FIND) == (
        "0xA900 Failure: Identifier Does Not Match SOP Class"
    )
    assert dimse_status.describe(answer(0xC123)) == "0xC123 Failure: Cannot Understand"
    assert dimse_status.describe(answer(0x0000)) == "0x0000 Success"
    assert dimse_status.describe(answer(0x1234)) == "0x1234 Unknown"  # in no table: pynetdicom's category alone
