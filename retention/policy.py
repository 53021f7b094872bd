"""The pure core of retention: which rule governs a camera, and how deleted chunks are
recorded (docs/design/storage.md, Delete path).

Precedence: the camera's own rule, then the rule of the nearest region up the
camera's region path, then the default rule. A camera no rule reaches keeps its
footage: nothing is deleted without a rule that says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from vigil.errors import InvalidInput


@dataclass(frozen=True)
class Rule:
    keep_days: int
    scope: str  # "camera <name>", "region <code>", "default"


@dataclass(frozen=True)
class RuleSet:
    """Every rule, indexed as ``governing`` reads them."""

    by_camera: Mapping[int, Rule]
    by_region: Mapping[int, Rule]
    default: Rule | None


def governing(rules: RuleSet, *, camera_id: int, region_path: str | None) -> Rule | None:
    """The rule that governs a camera. ``region_path`` is its region's materialised
    path of ids (``"1/5/9/"``, the camera's region last), or None."""
    if camera_id in rules.by_camera:
        return rules.by_camera[camera_id]
    if region_path:
        ids = [int(part) for part in region_path.strip("/").split("/") if part]
        for region_id in reversed(ids):  # the nearest region first
            if region_id in rules.by_region:
                return rules.by_region[region_id]
    return rules.default


def check_keep_days(keep_days: int, *, floor_days: int) -> None:
    """A rule keeps footage at least ``floor_days`` (VIGIL_RETENTION_FLOOR_DAYS)."""
    if keep_days < floor_days:
        raise InvalidInput(f"a retention rule of {keep_days} days is below the floor of "
                           f"{floor_days} days that no rule may go under")


@dataclass(frozen=True)
class Removed:
    """One deleted chunk, as its tombstone held it."""

    camera_id: int
    seq: int
    start_at: datetime
    end_at: datetime
    stored_bytes: int
    chain_hash: bytes
    keep_days: int
    rule: str


@dataclass(frozen=True)
class Stretch:
    """A contiguous run of ``seq`` of one camera, removed under one rule: what a
    retention record holds."""

    camera_id: int
    first_seq: int
    last_seq: int
    stored_bytes: int
    start_at: datetime
    end_at: datetime
    last_chain_hash: bytes
    keep_days: int
    rule: str

    @property
    def chunks(self) -> int:
        return self.last_seq - self.first_seq + 1


def stretches(removed: Iterable[Removed]) -> list[Stretch]:
    """Group removed chunks into runs of consecutive ``seq`` per camera and rule."""
    out: list[Stretch] = []
    ordered: Sequence[Removed] = sorted(removed, key=lambda r: (r.camera_id, r.seq))
    for r in ordered:
        last = out[-1] if out else None
        if last is not None and last.camera_id == r.camera_id and \
                last.last_seq + 1 == r.seq and (last.keep_days, last.rule) == (r.keep_days,
                                                                            r.rule):
            out[-1] = Stretch(camera_id=last.camera_id, first_seq=last.first_seq,
                              last_seq=r.seq, stored_bytes=last.stored_bytes + r.stored_bytes,
                              start_at=last.start_at, end_at=r.end_at,
                              last_chain_hash=r.chain_hash, keep_days=r.keep_days,
                              rule=r.rule)
        else:
            out.append(Stretch(camera_id=r.camera_id, first_seq=r.seq, last_seq=r.seq,
                               stored_bytes=r.stored_bytes, start_at=r.start_at,
                               end_at=r.end_at, last_chain_hash=r.chain_hash,
                               keep_days=r.keep_days, rule=r.rule))
    return out
