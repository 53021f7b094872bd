"""Recording health: the pure figures first, then the API over rows in a rolled-back session."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from recorder import health
from recorder.health import (
    CameraDay,
    RegionInfo,
    StatusEvent,
    camera_health,
    completeness,
    day_window,
    hour_buckets,
    online_time,
    region_health,
    status_spans,
)
from tests import factories
from vigil.catalog.models import (
    Camera,
    CameraStatus,
    CameraStatusEvent,
    Principal,
    Region,
    RegionLevel,
)
from vigil.errors import InvalidInput
from vigil.intervals import Span

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
DAY = date(2026, 11, 20)
T0 = datetime(2026, 11, 20, tzinfo=UTC)
H = timedelta(hours=1)
LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)  # created before any day tested here
AFTER_DAY = T0 + 2 * timedelta(days=1)  # "now" when DAY is wholly in the past
REC, RECONNECTING, OFFLINE, PENDING = (CameraStatus.RECORDING, CameraStatus.RECONNECTING,
                                       CameraStatus.OFFLINE, CameraStatus.PENDING)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def span(h0: float, h1: float) -> Span:
    return Span(at(h0), at(h1))


def cam_day(*, recorded: tuple[Span, ...] = (), created_at: datetime = LONG_AGO,
            status_at_start: CameraStatus = PENDING, events: tuple[StatusEvent, ...] = (),
            status: CameraStatus = REC, region_path: str | None = None,
            camera_id: int = 1) -> CameraDay:
    return CameraDay(camera_id=camera_id, name=f"cam{camera_id}", region_id=None,
                     region_path=region_path, status=status, created_at=created_at,
                     last_chunk_end_at=None, recorded=recorded,
                     status_at_start=status_at_start, events=events)


def health_of(camera: CameraDay, *, now: datetime = AFTER_DAY, day: date = DAY,
              zone: ZoneInfo = UTC_ZONE) -> health.CameraHealth:
    return camera_health(camera=camera, window=day_window(day=day, zone=zone),
                         hours=hour_buckets(day=day, zone=zone), now=now)


# --- windows and hour buckets --------------------------------------------------------


def test_a_utc_day_is_24_one_hour_buckets() -> None:
    assert day_window(day=DAY, zone=UTC_ZONE) == span(0, 24)
    buckets = hour_buckets(day=DAY, zone=UTC_ZONE)
    assert [b for b in buckets] == [(span(h, h + 1),) for h in range(24)]


def test_a_shanghai_day_starts_at_16z_the_day_before() -> None:
    window = day_window(day=DAY, zone=ZoneInfo("Asia/Shanghai"))
    assert window == span(-8, 16)
    assert hour_buckets(day=DAY, zone=ZoneInfo("Asia/Shanghai"))[0] == (span(-8, -7),)


def test_spring_forward_day_in_berlin_is_23_hours_with_hour_2_skipped() -> None:
    day = date(2025, 3, 30)  # 02:00 CET -> 03:00 CEST at 01:00Z
    window = day_window(day=day, zone=BERLIN)
    assert window == Span(datetime(2025, 3, 29, 23, tzinfo=UTC), datetime(2025, 3, 30, 22,
                                                                          tzinfo=UTC))
    assert window.duration == 23 * H
    buckets = hour_buckets(day=day, zone=BERLIN)
    assert len(buckets) == 24
    assert buckets[2] == ()
    assert buckets[1] == (Span(datetime(2025, 3, 30, 0, tzinfo=UTC),
                               datetime(2025, 3, 30, 1, tzinfo=UTC)),)
    assert buckets[3] == (Span(datetime(2025, 3, 30, 1, tzinfo=UTC),
                               datetime(2025, 3, 30, 2, tzinfo=UTC)),)
    assert sum((s.duration for b in buckets for s in b), timedelta(0)) == 23 * H


def test_fall_back_day_in_berlin_is_25_hours_with_hour_2_twice() -> None:
    day = date(2025, 10, 26)  # 03:00 CEST -> 02:00 CET at 01:00Z
    window = day_window(day=day, zone=BERLIN)
    assert window.duration == 25 * H
    buckets = hour_buckets(day=day, zone=BERLIN)
    assert buckets[2] == (Span(datetime(2025, 10, 26, 0, tzinfo=UTC),
                               datetime(2025, 10, 26, 2, tzinfo=UTC)),)
    assert all(sum((s.duration for s in b), timedelta(0)) == H
               for h, b in enumerate(buckets) if h != 2)


@pytest.mark.parametrize(("day", "hours"), [(date(2025, 3, 30), 23), (date(2025, 10, 26), 25)])
def test_completeness_is_exact_on_a_dst_day(day: date, hours: int) -> None:
    window = day_window(day=day, zone=BERLIN)
    full = health_of(cam_day(recorded=(window,)), day=day, zone=BERLIN, now=window.end + H)
    assert full.completeness.whole == hours * H
    assert full.completeness_day == 1.0
    assert [v for v in full.completeness_by_hour if v is not None] == [1.0] * (24 if hours == 25
                                                                               else 23)
    # 22 hours recorded: 22/23 or 22/25, not 22/24.
    part = health_of(cam_day(recorded=(Span(window.start, window.start + 22 * H),)),
                     day=day, zone=BERLIN, now=window.end + H)
    assert part.completeness_day == 22 / hours


def test_fall_back_hour_bucket_holds_both_occurrences() -> None:
    day = date(2025, 10, 26)
    first_0200 = Span(datetime(2025, 10, 26, 0, tzinfo=UTC), datetime(2025, 10, 26, 1,
                                                                      tzinfo=UTC))
    got = health_of(cam_day(recorded=(first_0200,)), day=day, zone=BERLIN,
                    now=datetime(2025, 10, 28, tzinfo=UTC))
    assert got.completeness_by_hour[2] == 0.5  # one of the two 02:00 hours
    assert got.completeness_by_hour[1] == 0.0 and got.completeness_by_hour[3] == 0.0


# --- completeness --------------------------------------------------------------------


def test_a_camera_created_mid_day_owes_only_the_rest_of_it() -> None:
    got = health_of(cam_day(recorded=(span(12, 18),), created_at=at(12)))
    assert got.completeness.whole == 12 * H
    assert got.completeness_day == 0.5
    assert got.completeness_by_hour[:12] == (None,) * 12
    assert got.completeness_by_hour[12:18] == (1.0,) * 6
    assert got.completeness_by_hour[18:] == (0.0,) * 6


def test_a_camera_created_mid_hour_owes_the_rest_of_that_hour() -> None:
    got = health_of(cam_day(recorded=(span(12.5, 13),), created_at=at(12.5)))
    assert got.completeness_by_hour[12] == 1.0


def test_the_future_is_not_due() -> None:
    got = health_of(cam_day(recorded=(span(0, 10.5),)), now=at(10.5))
    assert got.completeness.whole == 10.5 * H
    assert got.completeness_day == 1.0
    assert got.completeness_by_hour[10] == 1.0  # 30 min due, 30 min recorded
    assert got.completeness_by_hour[11:] == (None,) * 13


def test_a_day_entirely_in_the_future_or_before_creation_has_no_figures() -> None:
    for camera, now in ((cam_day(), at(-1)), (cam_day(created_at=at(30)), at(48))):
        got = health_of(camera, now=now)
        assert got.completeness_day is None and got.online_fraction is None
        assert got.completeness_by_hour == (None,) * 24
        assert not got.counted and not got.online and not got.good


def test_recorded_ranges_outside_the_due_time_do_not_count() -> None:
    ratio = completeness(recorded=[span(-2, 2), span(5, 6), span(5.5, 7), span(23, 30)],
                         windows=[span(0, 24)], created_at=at(-100), now=at(24))
    assert ratio.part == 2 * H + 2 * H + 1 * H


# --- online time ---------------------------------------------------------------------


def test_no_events_means_pending_all_day() -> None:
    got = online_time(events=(), status_at_start=PENDING, window=span(0, 24),
                      created_at=at(-1), now=at(24))
    assert got.part == timedelta(0) and got.value == 0.0


def test_status_before_the_window_holds_until_the_first_event() -> None:
    got = online_time(events=(StatusEvent(at(6), OFFLINE),), status_at_start=REC,
                      window=span(0, 24), created_at=at(-1), now=at(24))
    assert got.value == 0.25


def test_status_flapping_counts_only_recording_time() -> None:
    # Off at the start; from 01:00, 10 s recording / 5 s reconnecting, 100 times.
    events: list[StatusEvent] = []
    t = at(1)
    for _ in range(100):
        events += [StatusEvent(t, REC), StatusEvent(t + timedelta(seconds=10), RECONNECTING)]
        t += timedelta(seconds=15)
    events.append(StatusEvent(at(12), REC))
    got = online_time(events=events, status_at_start=OFFLINE, window=span(0, 24),
                      created_at=at(-1), now=at(24))
    assert got.part == timedelta(seconds=1000) + 12 * H


def test_repeated_and_simultaneous_events_are_handled() -> None:
    events = [StatusEvent(at(1), REC), StatusEvent(at(2), REC),  # repeated: one span
              StatusEvent(at(3), OFFLINE), StatusEvent(at(3), REC),  # same instant: last wins
              StatusEvent(at(4), OFFLINE)]
    assert status_spans(events=events, status_at_start=OFFLINE, window=span(0, 24)) == [
        span(1, 4)]


def test_events_at_or_before_the_window_start_set_the_starting_status() -> None:
    events = [StatusEvent(at(-5), OFFLINE), StatusEvent(at(0), REC), StatusEvent(at(30), OFFLINE)]
    assert status_spans(events=events, status_at_start=PENDING, window=span(0, 24)) == [
        span(0, 24)]


def test_online_time_is_clipped_to_creation_and_now() -> None:
    got = online_time(events=(), status_at_start=REC, window=span(0, 24), created_at=at(6),
                      now=at(18))
    assert (got.part, got.whole) == (12 * H, 12 * H)


def test_thresholds_are_inclusive() -> None:
    half_online = cam_day(recorded=(span(0, 21.6),), status_at_start=REC,
                          events=(StatusEvent(at(12), OFFLINE),))
    got = health_of(half_online)
    assert got.online_fraction == health.ONLINE_FRACTION_THRESHOLD and got.online
    assert got.completeness_day == health.GOOD_COMPLETENESS_THRESHOLD and got.good
    just_under = health_of(cam_day(recorded=(span(0, 21.5),), status_at_start=REC,
                                   events=(StatusEvent(at(11.99), OFFLINE),)))
    assert not just_under.online and not just_under.good


def test_a_disabled_camera_is_not_counted() -> None:
    got = health_of(cam_day(recorded=(span(0, 24),), status=CameraStatus.DISABLED))
    assert got.completeness_day == 1.0
    assert not got.counted and not got.online and not got.good


# --- regions -------------------------------------------------------------------------


def test_regions_roll_up_their_subtrees() -> None:
    city = RegionInfo(id=1, code="C", name="city", level="city", path="1/")
    county_a = RegionInfo(id=2, code="A", name="a", level="county", path="1/2/")
    county_b = RegionInfo(id=3, code="B", name="b", level="county", path="1/3/")
    town = RegionInfo(id=10, code="T", name="t", level="township", path="1/2/10/")
    empty = RegionInfo(id=4, code="E", name="e", level="county", path="1/4/")
    cams = [
        # county A: online and good
        cam_day(camera_id=1, region_path="1/2/", recorded=(span(0, 24),), status_at_start=REC),
        # township under A: online 0.75, completeness 0.5
        cam_day(camera_id=2, region_path="1/2/10/", recorded=(span(0, 12),),
                status_at_start=REC, events=(StatusEvent(at(18), OFFLINE),)),
        # county B: offline all day
        cam_day(camera_id=3, region_path="1/3/", status_at_start=OFFLINE),
        # county B, disabled: not counted
        cam_day(camera_id=4, region_path="1/3/", status=CameraStatus.DISABLED),
        # no region: only in the overall row
        cam_day(camera_id=5, recorded=(span(0, 24),), status_at_start=REC),
    ]
    rows = region_health(cameras=[health_of(c) for c in cams],
                         regions=[town, county_b, empty, city, county_a])
    by_code = {None if r.region is None else r.region.code: r for r in rows}
    assert [None if r.region is None else r.region.code for r in rows] == [
        None, "C", "A", "T", "B"]  # overall, then tree order; E has no cameras
    overall = by_code[None]
    assert (overall.cameras, overall.online, overall.good) == (4, 3, 2)
    assert overall.online_rate == 0.75 and overall.good_rate == 0.5
    assert overall.mean_completeness == (1 + 0.5 + 0 + 1) / 4
    assert overall.online_fraction == (24 + 18 + 0 + 24) / 96
    assert overall.meets_target is False
    city_row = by_code["C"]
    assert (city_row.cameras, city_row.online, city_row.good) == (3, 2, 1)
    assert (by_code["A"].cameras, by_code["A"].online_rate, by_code["A"].meets_target) == (
        2, 1.0, True)
    assert by_code["A"].online_fraction == 42 / 48
    assert (by_code["T"].cameras, by_code["T"].good) == (1, 0)
    b = by_code["B"]
    assert (b.cameras, b.online_rate, b.meets_target) == (1, 0.0, False)


def test_a_region_whose_cameras_are_all_uncounted_has_no_rates() -> None:
    region = RegionInfo(id=1, code="C", name="c", level="city", path="1/")
    rows = region_health(cameras=[health_of(cam_day(region_path="1/", created_at=at(30)))],
                         regions=[region])
    assert rows[1].cameras == 0
    assert rows[1].online_rate is None and rows[1].meets_target is None


def test_exactly_90_percent_online_meets_the_target() -> None:
    cams = [cam_day(camera_id=i, status_at_start=REC if i < 9 else OFFLINE) for i in range(10)]
    overall = region_health(cameras=[health_of(c) for c in cams], regions=[])[0]
    assert overall.online_rate == health.TARGET_ONLINE_RATE and overall.meets_target


# --- input ---------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["2026-13-01", "2026-02-30", "20261120", "2026-W47-5", "",
                                  "yesterday", "2026-11-20T00:00Z", "٢٠٢٦-١١-٢٠"])
def test_bad_days_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match="YYYY-MM-DD"):
        health.parse_day(text)


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "Europe", "../etc/passwd", "/etc/passwd",
                                  "x" * 500])
def test_bad_zones_are_refused(name: str) -> None:
    with pytest.raises(InvalidInput, match="time zone"):
        health.parse_zone(name)


def test_days_at_the_end_of_the_calendar_are_refused() -> None:
    with pytest.raises(InvalidInput, match="out of range"):
        day_window(day=date.max, zone=UTC_ZONE)


# --- through the database and the API ------------------------------------------------


def _region(session: Session, code: str, level: RegionLevel,
            parent: Region | None = None) -> Region:
    row = Region(code=f"{code}-{uuid.uuid4().hex[:8]}", name=code, level=level, path="",
                 parent_id=None if parent is None else parent.id)
    session.add(row)
    session.flush()
    row.path = f"{'' if parent is None else parent.path}{row.id}/"
    session.flush()
    return row


def _record(session: Session, cam: Camera, start: datetime, end: datetime,
            seq: int = 0) -> int:
    """Contiguous 600 s chunks over [start, end); returns the next seq."""
    key = factories.kek(session)
    t = start
    while t < end:
        seconds = min(600.0, (end - t).total_seconds())
        factories.chunk(session, cam=cam, key=key, seq=seq, start_at=t, seconds=seconds)
        t += timedelta(seconds=seconds)
        seq += 1
    return seq


def _event(session: Session, cam: Camera, when: datetime, status: CameraStatus) -> None:
    session.add(CameraStatusEvent(camera_id=cam.id, changed_at=when, status=status,
                                  recorder_id="test"))
    session.flush()


@pytest.fixture
def fleet(session: Session) -> dict[str, object]:
    """City C > counties A, B, D; township T under A. Day 2026-11-20 UTC, in the past."""
    city = _region(session, "C", RegionLevel.CITY)
    a = _region(session, "A", RegionLevel.COUNTY, city)
    b = _region(session, "B", RegionLevel.COUNTY, city)
    d = _region(session, "D", RegionLevel.COUNTY, city)
    t = _region(session, "T", RegionLevel.TOWNSHIP, a)
    _region(session, "E", RegionLevel.COUNTY, city)  # no cameras: no row
    long_ago = at(-24 * 19)
    # A: created 20:00, recorded and recording to the end of the day.
    a1 = factories.camera(session, region_id=a.id, created_at=at(20), status=REC)
    _record(session, a1, at(20), at(24))
    _event(session, a1, at(20), REC)
    # T (under A): created 20:00, one hour recorded, then offline.
    t1 = factories.camera(session, region_id=t.id, created_at=at(20), status=OFFLINE)
    _record(session, t1, at(20), at(21))
    _event(session, t1, at(20), REC)
    _event(session, t1, at(21), OFFLINE)
    # B: recording since the day before, one hour of chunks, offline from 18:00.
    b1 = factories.camera(session, region_id=b.id, created_at=long_ago, status=OFFLINE)
    _record(session, b1, at(0), at(1))
    _event(session, b1, at(-12), REC)
    _event(session, b1, at(18), OFFLINE)
    # B, disabled; D, created after the day; no region, never recorded.
    factories.camera(session, region_id=b.id, created_at=long_ago,
                     status=CameraStatus.DISABLED)
    factories.camera(session, region_id=d.id, created_at=at(30))
    nowhere = factories.camera(session, created_at=long_ago)
    return {"regions": {"C": city, "A": a, "B": b, "D": d, "T": t},
            "cams": {"a1": a1, "t1": t1, "b1": b1, "nowhere": nowhere}}


def _get(client, token: str, path: str, **params: str):  # noqa: ANN202
    return client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_camera_health_through_the_api(client, make_token, fleet) -> None:
    response = _get(client, make_token("auditor"), "/api/v1/health/cameras", day="2026-11-20")
    assert response.status_code == 200, response.text
    cams = fleet["cams"]
    rows = {r["id"]: r for r in response.json()}
    a1 = rows[cams["a1"].id]
    assert a1["completeness_day"] == 1.0 and a1["online_fraction"] == 1.0
    assert a1["online"] and a1["good"] and a1["counted"]
    assert a1["completeness_by_hour"] == [None] * 20 + [1.0] * 4
    assert datetime.fromisoformat(a1["last_chunk_end_at"]) == at(24)
    t1 = rows[cams["t1"].id]
    assert (t1["completeness_day"], t1["online_fraction"], t1["online"], t1["good"]) == (
        0.25, 0.25, False, False)
    b1 = rows[cams["b1"].id]
    assert b1["online_fraction"] == 0.75 and b1["online"]
    assert b1["completeness_day"] == 1 / 24 and not b1["good"]
    assert b1["completeness_by_hour"] == [1.0] + [0.0] * 23
    nowhere = rows[cams["nowhere"].id]
    assert nowhere["region_id"] is None and nowhere["last_chunk_end_at"] is None
    assert (nowhere["online_fraction"], nowhere["online"]) == (0.0, False)
    assert {c.id for c in cams.values()} <= set(rows)


def test_region_health_through_the_api(client, make_token, fleet) -> None:
    response = _get(client, make_token("admin"), "/api/v1/health/regions", day="2026-11-20")
    assert response.status_code == 200, response.text
    regions = fleet["regions"]
    rows = {r["region_id"]: r for r in response.json()}
    # Every region holding cameras, E (none) left out. Cameras that other tests commit
    # are created after this day, so they are never counted in the overall row.
    assert {None, *(r.id for r in regions.values())} <= set(rows)
    assert not any(r["code"] and r["code"].startswith("E-") for r in rows.values())
    overall = rows[None]
    assert (overall["cameras"], overall["online"], overall["good"]) == (4, 2, 1)
    assert overall["online_rate"] == 0.5 and overall["good_rate"] == 0.25
    assert overall["online_fraction"] == (4 + 1 + 18 + 0) / (4 + 4 + 24 + 24)
    assert overall["mean_completeness"] == pytest.approx((1 + 0.25 + 1 / 24 + 0) / 4)
    assert overall["meets_target"] is False
    city = rows[regions["C"].id]
    assert (city["cameras"], city["online"], city["good"]) == (3, 2, 1)
    a = rows[regions["A"].id]
    assert (a["cameras"], a["online"], a["online_rate"], a["meets_target"]) == (2, 1, 0.5,
                                                                                 False)
    b = rows[regions["B"].id]
    assert (b["cameras"], b["online_rate"], b["meets_target"]) == (1, 1.0, True)
    d = rows[regions["D"].id]
    assert (d["cameras"], d["online_rate"], d["meets_target"]) == (0, None, None)


def test_a_region_code_and_a_scoped_principal_narrow_the_report(client, make_token, fleet,
                                                                session: Session) -> None:
    regions = fleet["regions"]
    admin = make_token("admin")
    rows = _get(client, admin, "/api/v1/health/regions", day="2026-11-20",
                region=regions["A"].code).json()
    assert [r["region_id"] for r in rows] == [None, regions["A"].id, regions["T"].id]
    assert rows[0]["cameras"] == 2

    token = make_token("investigator", name="county-b-officer")
    principal = session.scalars(select(Principal).where(
        Principal.name == "county-b-officer")).one()
    principal.region_id = regions["B"].id
    session.flush()
    cams = _get(client, token, "/api/v1/health/cameras", day="2026-11-20").json()
    assert {c["region_id"] for c in cams} == {regions["B"].id}
    outside = _get(client, token, "/api/v1/health/regions", day="2026-11-20",
                   region=regions["A"].code)
    assert outside.status_code == 404
    assert outside.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("day", "hours", "by_hour"), [
    # 01:00 CET to 04:00 CEST is two real hours: buckets 1 and 3; 2 never happened.
    ("2025-03-30", 23, [0.0, 1.0, None, 1.0] + [0.0] * 20),
    # 02:00 CEST and 02:00 CET: both in bucket 2.
    ("2025-10-26", 25, [0.0, 0.0, 1.0] + [0.0] * 21),
])
def test_a_dst_day_through_the_api(client, make_token, session: Session, day: str, hours: int,
                                   by_hour: list[float | None]) -> None:
    d = date.fromisoformat(day)
    cam = factories.camera(session, created_at=datetime(2025, 1, 1, tzinfo=UTC))
    _record(session, cam, datetime.combine(d, datetime.min.time(), tzinfo=UTC),
            datetime.combine(d, datetime.min.time(), tzinfo=UTC) + 2 * H)
    response = _get(client, make_token("investigator"), "/api/v1/health/cameras", day=day,
                    tz="Europe/Berlin")
    assert response.status_code == 200, response.text
    row = next(r for r in response.json() if r["id"] == cam.id)
    assert row["completeness_day"] == 2 / hours
    assert row["completeness_by_hour"] == by_hour


@pytest.mark.parametrize("path", ["/api/v1/health/cameras", "/api/v1/health/regions"])
@pytest.mark.parametrize(("role", "status"), [
    ("admin", 200), ("investigator", 200), ("auditor", 200), ("recorder", 403)])
def test_health_by_role(client, make_token, path: str, role: str, status: int) -> None:
    response = _get(client, make_token(role), path, day="2026-11-20")
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("params", [{"day": "2026-11-31"}, {"day": "20261120"},
                                    {"day": "2026-11-20", "tz": "Mars/Olympus"},
                                    {"tz": "../../etc/passwd"}])
def test_bad_day_or_zone_answers_422(client, make_token, params: dict[str, str]) -> None:
    response = _get(client, make_token("admin"), "/api/v1/health/regions", **params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


def test_an_unknown_region_answers_404(client, make_token) -> None:
    response = _get(client, make_token("admin"), "/api/v1/health/cameras", region="no-such")
    assert response.status_code == 404


def test_the_cli_tables_render(session: Session, fleet) -> None:
    from rich.console import Console

    report = health.daily_report(session=session, day="2026-11-20", now=at(48))
    console = Console(width=200, record=True)
    for table in health.render_tables(report):
        console.print(table)
    text = console.export_text()
    assert "2026-11-20 (UTC, 24 h)" in text
    assert f"{fleet['regions']['B'].code} B" in text
    assert "█" in text
