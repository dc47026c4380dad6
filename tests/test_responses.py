"""The answer models: built from rows in one place, with the field names the README documents."""

from __future__ import annotations

import datetime as dt

from mammo_node.db.models import Destination, Exam, ExamEvent, OutboxItem
from mammo_node.db.models import Result as ResultRow
from mammo_node.domain import OutboxState
from mammo_node.responses import (
    Delivery,
    DestinationDeliveries,
    OutputFile,
    Result,
    StateChange,
)

T0 = dt.datetime(2026, 3, 4, 9, 0, tzinfo=dt.UTC)


def _exam(revision: int) -> Exam:
    return Exam(study_uid="1.2.3", state="scored", revision=revision, last_received_at=T0)


def _result(exam_revision: int) -> ResultRow:
    return ResultRow(
        id=7,
        exam_revision=exam_revision,
        created_at=T0 + dt.timedelta(seconds=12.5),
        model_name="m",
        model_version="1",
        model_is_demo=True,
        score_kind="logit_difference",
        exam_score=4.25,
        breast_scores={"L": -1.75, "R": 4.25},
        images={
            "1.2.3.4": {
                "slot": "R-CC",
                "holistic": 2.5,
                "attention": 3.0,
                "ensemble": 2.75,
                "coa": [10.5, 20.5],
                "roi": [1, 2, 30, 40],
            }
        },
        verdicts={"recall": True},
        timings={},
        device="cpu",
        sr_sop_instance_uid="1.2.3.9",
    )


def test_a_result_is_current_until_an_image_changes_the_exam() -> None:
    fresh = Result.of(_result(1), _exam(1)).to_json()
    model = {"name": "m", "version": "1", "is_demo": True, "bundle_sha256": ""}
    assert fresh["current"] and fresh["model"] == model
    assert fresh["seconds_to_result"] == 12.5
    assert fresh["images"]["1.2.3.4"]["coa"] == [10.5, 20.5]
    assert not Result.of(_result(1), _exam(2)).current


def _delivery(state: OutboxState, attempts: int, error: str = "") -> Delivery:
    item = OutboxItem(id=attempts, state=state.value, attempts=attempts, last_error=error)
    return Delivery.of(item, "pacs", "1.2.3.5", "sr")


def test_deliveries_per_destination_sum_up_their_rows() -> None:
    pacs = Destination(name="pacs", ae_title="PACS", host="10.0.0.5", port=104, enabled=True)
    pacs.config_error = ""
    done = _delivery(OutboxState.DELIVERED, 1)
    dead = _delivery(OutboxState.DEAD, 5, "association rejected")
    waiting = _delivery(OutboxState.PENDING, 2)
    assert DestinationDeliveries.of(pacs, [done]).summary == "delivered"
    mixed = DestinationDeliveries.of(pacs, [done, dead, waiting])
    assert mixed.summary == "failed" and mixed.attempts == 5
    assert mixed.states == {"delivered": 1, "dead": 1, "pending": 1}
    assert mixed.last_error == "association rejected" and mixed.address == "PACS@10.0.0.5:104"
    assert DestinationDeliveries.of(pacs, [done, waiting]).summary == "pending"
    assert done.to_json()["state"] == "delivered"


def test_json_names_and_what_stays_on_the_server() -> None:
    event = StateChange.of(ExamEvent(at=T0, from_state="receiving", to_state="scored", reason=""))
    assert event.to_json() == {
        "at": T0.isoformat(),
        "from": "receiving",
        "to": "scored",
        "reason": "",
    }
    output = OutputFile(
        kind="sr",
        sop_instance_uid="1.2.3.9",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
        series_uid="1.2.3.8",
        rel_path="1.2.3/1.2.3.8/1.2.3.9.dcm",
        laterality=None,
    )
    assert "rel_path" not in output.to_json() and output.rel_path  # the page may use it
