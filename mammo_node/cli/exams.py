"""`exams list|show|rescore`: what the node holds and what it found."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

if TYPE_CHECKING:
    from mammo_node.responses import ResultDetail
from mammo_node.cli.app import exams_app
from mammo_node.cli.common import DataDir, DbUrl, JsonFlag, _database, out


# --- exams -------------------------------------------------------------------------------
@exams_app.command("list")
def exams_list(
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    state: Annotated[str | None, typer.Option("--state")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Exams, most recent first."""
    from mammo_node.exams import list_exams

    exams = list_exams(_database(data_dir, db_url), state=state, limit=limit)
    if as_json:
        typer.echo(json.dumps([exam.to_json() for exam in exams], indent=2))
        return
    table = Table("study", "state", "images", "last image", "reason")
    for exam in exams:
        table.add_row(
            exam.study_uid,
            exam.state,
            str(exam.images),
            (exam.last_received_at or "")[:19],
            exam.reason,
        )
    out.print(table)


@exams_app.command("show")
def exams_show(
    study_uid: str,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
    as_json: JsonFlag = False,
) -> None:
    """One exam: state, which image fills each view, every object's role and the rule."""
    from mammo_node.exams import read_exam

    detail = read_exam(_database(data_dir, db_url), study_uid)
    if as_json:
        typer.echo(json.dumps(detail.to_json(), indent=2))
        return
    out.print(f"[bold]{detail.study_uid}[/bold]  {detail.state}  {detail.reason}")
    slots = Table("view", "SOP Instance UID")
    for slot, uid in detail.slots.items():
        slots.add_row(slot, uid or "[red]missing[/red]")
    out.print(slots)
    if detail.identity_conflict:
        out.print(f"[red]held:[/red] {detail.identity_conflict}")
    objects = Table("object", "class", "role", "rule", "detail")
    for item in [*detail.instances, *detail.conflicts]:
        objects.add_row(
            item.sop_instance_uid,
            getattr(item, "sop_class", item.sop_class_uid),
            item.role,
            item.rule,
            item.detail,
        )
    out.print(objects)
    for note in detail.selection_notes:
        out.print(f"note: {note}")
    if detail.result:
        _print_result(detail.result)


def _print_result(result: ResultDetail) -> None:
    model = result.model
    demo = " (DEMO, not for clinical use)" if model.is_demo else ""
    breasts = ", ".join(f"{lat} {score:.3f}" for lat, score in result.breast_scores.items())
    verdicts = ", ".join(
        f"{name}: {'yes' if hit else 'no'}" for name, hit in result.verdicts.items()
    )
    out.print(
        f"result {result.id} by {model.name} {model.version}{demo}: exam score "
        f"{result.exam_score:.3f} ({result.score_kind}); breasts {breasts}"
        + (f"; recall at {verdicts}" if verdicts else "")
        + (f"; category {result.category}/10" if result.category is not None else "")
        + (
            f"; probability of screening cancer {result.probability:.1%}"
            if result.probability is not None
            else ""
        )
        + ("" if result.current else "  [an image arrived since: a new result is due]")
    )
    views = Table("view", "holistic", "attention", "ensemble", "COA (x, y)", "ROI x0,y0,x1,y1")
    for image in sorted(result.images.values(), key=lambda i: i.slot):
        views.add_row(
            image.slot,
            f"{image.holistic:.3f}",
            f"{image.attention:.3f}",
            f"{image.ensemble:.3f}",
            f"{image.coa[0]:.0f}, {image.coa[1]:.0f}",
            ",".join(str(v) for v in image.roi),
        )
    out.print(views)
    states: dict[tuple[str, str], int] = {}
    for delivery in result.deliveries:
        key = (delivery.destination, delivery.state)
        states[key] = states.get(key, 0) + 1
    for (destination, state), count in sorted(states.items()):
        out.print(f"  {count} output(s) {state} to {destination}")


@exams_app.command("rescore")
def exams_rescore(
    study_uid: str,
    data_dir: DataDir = None,
    db_url: DbUrl = None,
) -> None:
    """Queue an exam for a new result; its SR will name the previous one."""
    from mammo_node.worker import rescore

    revision = rescore(_database(data_dir, db_url), study_uid)
    out.print(f"exam {study_uid} queued for scoring (revision {revision})")
