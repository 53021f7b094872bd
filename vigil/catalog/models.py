"""The catalog: typed ORM models of everything Vigil knows about its footage.

Conventions (docs/design/time.md, docs/design/storage.md):

* every datetime is a UTC ``timestamptz`` and its column ends in ``_at``;
* every interval is half-open ``[start_at, end_at)`` and the database checks
  ``end_at > start_at``;
* integer durations carry their unit (``_us``, ``_s``, ``_days``, ``_bytes``);
* hashes are raw 32-byte SHA-256 digests, checked by length.

Alembic's autogenerate must find no difference between these models and the
migrations; ``tests/test_migrations.py`` enforces it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# A chunk never spans more wall time than this. Recorders cut at a keyframe after
# the target duration (at most 300 s) and cameras send a keyframe every few
# seconds, so 600 s leaves room for a long GOP. The bound is what lets "chunks of
# camera C overlapping [t0, t1)" be a bounded index range scan:
# start_at in (t0 - MAX_CHUNK_WALL_S, t1). The database enforces it.
MAX_CHUNK_WALL_S: Final = 600
SHA256_BYTES: Final = 32

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: TIMESTAMP(timezone=True),
        bytes: LargeBinary,
        dict[str, Any]: JSONB,
        str: Text,
        uuid.UUID: UUID(as_uuid=True),
    }


def _enum(cls: type[StrEnum], name: str) -> Enum:
    return Enum(cls, name=name, values_callable=lambda e: [m.value for m in e],
                validate_strings=True)


def _now() -> Any:
    return mapped_column(server_default=func.now())


def _sha256_check(column: str) -> CheckConstraint:
    return CheckConstraint(f"octet_length({column}) = {SHA256_BYTES}", name=f"{column}_len")


# --- regions -------------------------------------------------------------------------


class RegionLevel(StrEnum):
    """Administrative tiers, from the top. A child sits at a lower tier than its parent."""

    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"
    TOWNSHIP = "township"
    VILLAGE = "village"


REGION_DEPTH: Final = {level: depth for depth, level in enumerate(RegionLevel)}


class Region(Base):
    __tablename__ = "regions"
    __table_args__ = (
        # Materialised path of ids ("1/5/9/"): a subtree is a prefix range scan,
        # which tiered authorisation uses on every scoped query.
        Index("ix_regions_path", "path", postgresql_ops={"path": "text_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("regions.id", ondelete="RESTRICT"), index=True)
    level: Mapped[RegionLevel] = mapped_column(_enum(RegionLevel, "region_level"))
    # Administrative division code (GB/T 2260 and its extensions), unique.
    code: Mapped[str] = mapped_column(unique=True)
    name: Mapped[str]
    path: Mapped[str]
    created_at: Mapped[datetime] = _now()


# --- principals, roles, tokens ------------------------------------------------------


class RoleName(StrEnum):
    ADMIN = "admin"
    INVESTIGATOR = "investigator"
    AUDITOR = "auditor"
    RECORDER = "recorder"


class Role(Base):
    """The closed set of roles; rows are seeded by the first migration."""

    __tablename__ = "roles"

    name: Mapped[str] = mapped_column(primary_key=True)
    description: Mapped[str]


class Principal(Base):
    """A person or a service account. Scope (vigil/auth/scope.py): a region subtree
    (NULL = everything), narrowed to an explicit camera set if it has any
    ``principal_cameras`` rows."""

    __tablename__ = "principals"
    __table_args__ = (
        UniqueConstraint("oidc_issuer", "oidc_subject"),
        CheckConstraint("(oidc_issuer IS NULL) = (oidc_subject IS NULL)",
                        name="oidc_identity_complete"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    role: Mapped[str] = mapped_column(ForeignKey("roles.name", ondelete="RESTRICT"))
    region_id: Mapped[int | None] = mapped_column(
        ForeignKey("regions.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = _now()
    disabled_at: Mapped[datetime | None]
    # Principals that sign in through an OIDC provider (vigil/auth/oidc.py): the
    # issuer and the token's ``sub``. Role and region follow the token's claims.
    oidc_issuer: Mapped[str | None]
    oidc_subject: Mapped[str | None]
    # Last authenticated request, to tell a login (first use after an idle spell)
    # from the requests of a session (vigil/auth/service.py).
    last_seen_at: Mapped[datetime | None]


class PrincipalCamera(Base):
    """A camera in a principal's explicit camera set (partner departments): a principal
    with any rows here sees only these cameras, and only those in its region subtree."""

    __tablename__ = "principal_cameras"

    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), primary_key=True)
    # RESTRICT: deleting the last camera of a set must not widen the principal's scope
    # to its whole region (no rows means no camera set).
    camera_id: Mapped[int] = mapped_column(
        ForeignKey("cameras.id", ondelete="RESTRICT"), primary_key=True, index=True)
    added_by: Mapped[int | None] = mapped_column(
        ForeignKey("principals.id", ondelete="RESTRICT"))
    added_at: Mapped[datetime] = _now()


class RevokedJwt(Base):
    """An OIDC token revoked before its expiry, by its ``jti``. Kept until ``expires_at``,
    after which the token is refused for its age anyway."""

    __tablename__ = "revoked_jwts"

    jti: Mapped[str] = mapped_column(primary_key=True)
    issuer: Mapped[str]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    revoked_at: Mapped[datetime] = _now()
    revoked_by: Mapped[int | None] = mapped_column(
        ForeignKey("principals.id", ondelete="RESTRICT"))


class ApiToken(Base):
    """A bearer token. Only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "api_tokens"
    __table_args__ = (_sha256_check("token_hash"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[bytes] = mapped_column(unique=True)
    # First characters of the token, for telling tokens apart in listings.
    display_prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str]
    created_at: Mapped[datetime] = _now()
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]

    principal: Mapped[Principal] = relationship(lazy="joined")


# --- cameras -------------------------------------------------------------------------


class CameraStatus(StrEnum):
    PENDING = "pending"  # registered, never recorded
    RECORDING = "recording"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"
    DISABLED = "disabled"


class Camera(Base):
    __tablename__ = "cameras"
    __table_args__ = (
        CheckConstraint("chunk_target_s BETWEEN 2 AND 300", name="chunk_target_range"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    # May carry credentials (rtsp://user:pass@host/...): never echo it unredacted.
    source_url: Mapped[str]
    region_id: Mapped[int | None] = mapped_column(
        ForeignKey("regions.id", ondelete="RESTRICT"), index=True)
    chunk_target_s: Mapped[int] = mapped_column(SmallInteger, server_default=text("60"))
    status: Mapped[CameraStatus] = mapped_column(
        _enum(CameraStatus, "camera_status"), server_default=CameraStatus.PENDING.value)
    # Exports of a sensitive camera may need a second person's approval.
    sensitive: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


# --- keys ----------------------------------------------------------------------------


class KeyPurpose(StrEnum):
    KEK = "kek"  # wraps per-chunk data keys
    CHECKPOINT_SIGNING = "checkpoint_signing"
    PACKAGE_SIGNING = "package_signing"
    AUDIT_SIGNING = "audit_signing"


class KeyState(StrEnum):
    ACTIVE = "active"  # used for new wraps or signatures
    RETIRED = "retired"  # kept to unwrap or to verify, never used for new work
    DESTROYED = "destroyed"


class Key(Base):
    """A key held by a key provider. The catalog keeps its identity, never the secret."""

    __tablename__ = "keys"
    __table_args__ = (UniqueConstraint("purpose", "version"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    purpose: Mapped[KeyPurpose] = mapped_column(_enum(KeyPurpose, "key_purpose"))
    version: Mapped[int]
    provider: Mapped[str]  # "file", later "kms", "vault-transit"
    provider_ref: Mapped[str]  # where the provider finds the key material
    public_key: Mapped[bytes | None]  # signing keys: the raw public key
    fingerprint: Mapped[str | None]  # signing keys: sha256 of the public key, hex
    state: Mapped[KeyState] = mapped_column(
        _enum(KeyState, "key_state"), server_default=KeyState.ACTIVE.value)
    created_at: Mapped[datetime] = _now()
    retired_at: Mapped[datetime | None]
    destroyed_at: Mapped[datetime | None]


class DataKey(Base):
    """A chunk's data key, wrapped by a key-encryption key.

    Destroying it (``wrapped`` set to NULL, ``destroyed_at`` set) makes the chunk
    unrecoverable everywhere, copies included: crypto-shredding.
    """

    __tablename__ = "data_keys"
    __table_args__ = (
        CheckConstraint("(wrapped IS NULL) = (destroyed_at IS NOT NULL)",
                        name="destroyed_iff_no_key"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kek_id: Mapped[int] = mapped_column(ForeignKey("keys.id", ondelete="RESTRICT"), index=True)
    wrapped: Mapped[bytes | None]
    created_at: Mapped[datetime] = _now()
    destroyed_at: Mapped[datetime | None]


# --- chunks: the time index ----------------------------------------------------------


class ClockSource(StrEnum):
    RTCP = "rtcp"  # camera's RTCP sender reports (NTP wall clock)
    RECEIVE = "receive"  # recorder's clock when the first packet arrived
    IMPORT = "import"  # operator-supplied start of an imported file


class Chunk(Base):
    """One sealed, stored piece of one camera's footage over ``[start_at, end_at)``.

    A row exists only once its object is stored and verified (storage invariant 1).
    """

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("camera_id", "seq"),
        # The time index: an overlap query is a range scan on (camera_id, start_at),
        # and end_at rides along so that timelines are index-only scans.
        Index("ix_chunks_camera_id_start_at", "camera_id", "start_at",
              postgresql_include=["end_at"]),
        CheckConstraint("end_at > start_at", name="interval_nonempty"),
        CheckConstraint(f"end_at - start_at <= interval '{MAX_CHUNK_WALL_S} seconds'",
                        name="interval_bounded"),
        CheckConstraint("media_duration_us > 0", name="media_duration_positive"),
        CheckConstraint("plaintext_bytes > 0 AND stored_bytes > 0", name="sizes_positive"),
        CheckConstraint("seq >= 0", name="seq_nonnegative"),
        _sha256_check("sha256"),
        _sha256_check("chain_hash"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    seq: Mapped[int] = mapped_column(BigInteger)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    # Sum of the frames' durations by the stream's own timestamps: kept apart from
    # the wall-clock interval, which also absorbs clock corrections.
    media_duration_us: Mapped[int] = mapped_column(BigInteger)
    clock_source: Mapped[ClockSource] = mapped_column(_enum(ClockSource, "clock_source"))
    plaintext_bytes: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    object_key: Mapped[str] = mapped_column(unique=True)
    sha256: Mapped[bytes]  # of the plaintext chunk
    chain_hash: Mapped[bytes]  # H(previous chain hash, metadata, sha256)
    data_key_id: Mapped[int] = mapped_column(
        ForeignKey("data_keys.id", ondelete="RESTRICT"), unique=True)
    # Codec parameters: codec, profile, resolution, time base, audio, extradata hash.
    codec: Mapped[dict[str, Any]]
    # Imported footage: who imported it, when, from what file (its SHA-256). NULL for
    # footage recorded live.
    provenance: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = _now()


class CameraLease(Base):
    """Which recorder records a camera, until when. A recorder renews its leases well
    before they expire; a dead recorder's leases expire and another takes them."""

    __tablename__ = "camera_leases"

    camera_id: Mapped[int] = mapped_column(
        ForeignKey("cameras.id", ondelete="CASCADE"), primary_key=True)
    recorder_id: Mapped[str]
    acquired_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class CameraStatusEvent(Base):
    """A camera's status changes, as the recorder saw them: the source of online time."""

    __tablename__ = "camera_status_events"
    __table_args__ = (Index("ix_camera_status_events_camera_id_changed_at", "camera_id",
                            "changed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    changed_at: Mapped[datetime]
    status: Mapped[CameraStatus] = mapped_column(_enum(CameraStatus, "camera_status"))
    recorder_id: Mapped[str]
    detail: Mapped[str] = mapped_column(server_default="")


class ChainHead(Base):
    """The last committed link of a camera's hash chain: what the next chunk follows."""

    __tablename__ = "chain_heads"
    __table_args__ = (_sha256_check("chain_hash"),)

    camera_id: Mapped[int] = mapped_column(
        ForeignKey("cameras.id", ondelete="RESTRICT"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[bytes]
    updated_at: Mapped[datetime] = _now()


class Checkpoint(Base):
    """A recorder's Ed25519 signature over a camera's chain head (vigil/chain.py)."""

    __tablename__ = "checkpoints"
    __table_args__ = (
        Index("ix_checkpoints_camera_id_seq", "camera_id", "seq"),
        _sha256_check("chain_hash"),
        CheckConstraint("octet_length(signature) = 64", name="signature_len"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[bytes]
    signed_at: Mapped[datetime]
    key_id: Mapped[int] = mapped_column(ForeignKey("keys.id", ondelete="RESTRICT"))
    signature: Mapped[bytes]


class GapCause(StrEnum):
    DISCONNECT = "disconnect"  # the stream failed or the camera went away
    STREAM_ERROR = "stream_error"  # garbage or truncated input ended the run
    RECORDER_STOPPED = "recorder_stopped"  # shutdown, crash or lease loss
    SPOOL_FULL = "spool_full"  # the spool reached its disk budget during an outage


class RecordingGap(Base):
    """An explicit hole in a camera's recording, ``[start_at, end_at)``, with its cause.

    Written by the recorder when a run ends and the next begins, so that a gap in a
    timeline is a recorded fact, not an absence.
    """

    __tablename__ = "recording_gaps"
    __table_args__ = (
        Index("ix_recording_gaps_camera_id_start_at", "camera_id", "start_at"),
        CheckConstraint("end_at > start_at", name="interval_nonempty"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    cause: Mapped[GapCause] = mapped_column(_enum(GapCause, "gap_cause"))
    detail: Mapped[str] = mapped_column(server_default="")
    created_at: Mapped[datetime] = _now()


# --- retention and holds -------------------------------------------------------------


class RetentionRule(Base):
    """Keep footage ``keep_days``: for a camera, a region subtree, or by default.

    The most specific rule wins: camera, then the nearest region up the tree, then
    the default (both ids NULL).
    """

    __tablename__ = "retention_rules"
    __table_args__ = (
        CheckConstraint("NOT (camera_id IS NOT NULL AND region_id IS NOT NULL)",
                        name="one_scope"),
        CheckConstraint("keep_days > 0", name="keep_days_positive"),
        Index("uq_retention_rules_camera_id", "camera_id", unique=True,
              postgresql_where=text("camera_id IS NOT NULL")),
        Index("uq_retention_rules_region_id", "region_id", unique=True,
              postgresql_where=text("region_id IS NOT NULL")),
        Index("uq_retention_rules_default", text("(true)"), unique=True,
              postgresql_where=text("camera_id IS NULL AND region_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    camera_id: Mapped[int | None] = mapped_column(ForeignKey("cameras.id", ondelete="CASCADE"))
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="CASCADE"))
    keep_days: Mapped[int]
    created_by: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class CaseStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint("(status = 'closed') = (closed_at IS NOT NULL)",
                        name="closed_iff_closed_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    reference: Mapped[str] = mapped_column(unique=True)
    title: Mapped[str]
    description: Mapped[str] = mapped_column(server_default="")
    status: Mapped[CaseStatus] = mapped_column(
        _enum(CaseStatus, "case_status"), server_default=CaseStatus.OPEN.value)
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="RESTRICT"))
    created_by: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = _now()
    closed_at: Mapped[datetime | None]


class CaseMember(Base):
    __tablename__ = "case_members"

    case_id: Mapped[int] = mapped_column(
        ForeignKey("cases.id", ondelete="CASCADE"), primary_key=True)
    principal_id: Mapped[int] = mapped_column(
        ForeignKey("principals.id", ondelete="RESTRICT"), primary_key=True, index=True)
    added_by: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="RESTRICT"))
    added_at: Mapped[datetime] = _now()


class Hold(Base):
    """An evidence lock on ``[start_at, end_at)`` of one camera, for a case."""

    __tablename__ = "holds"
    __table_args__ = (
        Index("ix_holds_camera_id_start_at", "camera_id", "start_at"),
        CheckConstraint("end_at > start_at", name="interval_nonempty"),
        CheckConstraint(
            "(released_at IS NULL) = (released_by IS NULL) "
            "AND (released_at IS NULL) = (release_reason IS NULL)",
            name="release_complete"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"), index=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    reason: Mapped[str]
    created_by: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = _now()
    released_at: Mapped[datetime | None]
    released_by: Mapped[int | None] = mapped_column(
        ForeignKey("principals.id", ondelete="RESTRICT"))
    release_reason: Mapped[str | None]
    # Set for the holds an export places on its footage while its case is open.
    export_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("exports.id", ondelete="RESTRICT"), index=True)
    # S3 legal holds on the objects it covers: placed (locked_at) while the hold is
    # unreleased, lifted (unlocked_at) after its release (retention/worm.py).
    locked_at: Mapped[datetime | None]
    unlocked_at: Mapped[datetime | None]


class Tombstone(Base):
    """A chunk being deleted (docs/design/storage.md, D1-D5): written in the transaction
    that deletes its row, removed in the one that writes its retention record."""

    __tablename__ = "tombstones"
    __table_args__ = (UniqueConstraint("camera_id", "seq"),)

    chunk_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    seq: Mapped[int] = mapped_column(BigInteger)
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    object_key: Mapped[str] = mapped_column(unique=True)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[bytes]
    data_key_id: Mapped[int] = mapped_column(ForeignKey("data_keys.id", ondelete="RESTRICT"))
    row: Mapped[dict[str, Any]]  # every column of the chunk, to put it back (D2 refused)
    keep_days: Mapped[int]
    rule: Mapped[str]  # the rule that expired it: "camera 3", "region 1/5/", "default"
    sweep_id: Mapped[uuid.UUID]
    object_deleted_at: Mapped[datetime | None]  # D2 done
    key_destroyed_at: Mapped[datetime | None]  # D3 done
    created_at: Mapped[datetime] = _now()


class RetentionRecord(Base):
    """What retention removed: one contiguous run of ``seq`` of one camera (D4).

    Append-only. A chain whose ``seq`` jumps from *k* to *m* is intact only if records
    cover exactly *k+1 ... m-1* and chunk *m* links to ``last_chain_hash``."""

    __tablename__ = "retention_records"
    __table_args__ = (
        Index("ix_retention_records_camera_id_last_seq", "camera_id", "last_seq"),
        CheckConstraint("last_seq >= first_seq", name="seq_range"),
        CheckConstraint("chunks = last_seq - first_seq + 1", name="chunks_count"),
        _sha256_check("last_chain_hash"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    first_seq: Mapped[int] = mapped_column(BigInteger)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[int] = mapped_column(BigInteger)
    stored_bytes: Mapped[int] = mapped_column(BigInteger)
    start_at: Mapped[datetime]  # the first removed chunk's start
    end_at: Mapped[datetime]  # the last removed chunk's end
    last_chain_hash: Mapped[bytes]
    keep_days: Mapped[int]
    rule: Mapped[str]
    sweep_id: Mapped[uuid.UUID]
    created_at: Mapped[datetime] = _now()


# --- exports -------------------------------------------------------------------------


class ApprovalPolicy(Base):
    """When an export needs a second person's approval before its package is released:
    for a region subtree (the nearest region up the tree wins) or by default (NULL)."""

    __tablename__ = "approval_policies"
    __table_args__ = (
        CheckConstraint("max_duration_s IS NULL OR max_duration_s > 0",
                        name="max_duration_positive"),
        Index("uq_approval_policies_region_id", "region_id", unique=True,
              postgresql_where=text("region_id IS NOT NULL")),
        Index("uq_approval_policies_default", text("(true)"), unique=True,
              postgresql_where=text("region_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="CASCADE"))
    # An export whose footage (summed over its items) is longer needs approval;
    # NULL: no length needs it.
    max_duration_s: Mapped[int | None]
    # An export that includes a camera marked sensitive needs approval.
    sensitive_cameras: Mapped[bool] = mapped_column(server_default=text("true"))
    created_by: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="RESTRICT"))
    updated_at: Mapped[datetime] = _now()


class ApprovalState(StrEnum):
    NOT_REQUIRED = "not_required"
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


class ExportStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Export(Base):
    __tablename__ = "exports"
    __table_args__ = (
        CheckConstraint("progress_pct BETWEEN 0 AND 100", name="progress_range"),
        _sha256_check("package_sha256"),
    )

    # Random, so that export ids in URLs and watermarks cannot be enumerated.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"), index=True)
    requested_by: Mapped[int] = mapped_column(ForeignKey("principals.id", ondelete="RESTRICT"))
    purpose: Mapped[str]
    recipient: Mapped[str | None]  # named on the watermarked copy
    status: Mapped[ExportStatus] = mapped_column(
        _enum(ExportStatus, "export_status"), server_default=ExportStatus.QUEUED.value)
    stage: Mapped[str] = mapped_column(server_default="queued")
    progress_pct: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    package_key: Mapped[str | None]
    package_sha256: Mapped[bytes | None]
    package_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # The stored package is sealed as chunks are, under its own data key.
    package_data_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("data_keys.id", ondelete="RESTRICT"))
    error: Mapped[str | None]
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # The worker building the package holds a lease, renewed while it works, so that
    # a task delivered twice runs once and a dead worker's export is taken over.
    lease_owner: Mapped[str | None]
    lease_expires_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    # Export approval (retrieval/approval.py): decided at request time; the package is
    # released (downloaded) only when this is not_required or approved.
    approval: Mapped[ApprovalState] = mapped_column(
        _enum(ApprovalState, "approval_state"), server_default=ApprovalState.NOT_REQUIRED.value)
    approval_reason: Mapped[str | None]  # why it needs approval
    decided_by: Mapped[int | None] = mapped_column(
        ForeignKey("principals.id", ondelete="RESTRICT"))
    decided_at: Mapped[datetime | None]
    decision_note: Mapped[str | None]


class ExportItem(Base):
    """One camera's range within an export; an export may hold several cameras."""

    __tablename__ = "export_items"
    __table_args__ = (CheckConstraint("end_at > start_at", name="interval_nonempty"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    export_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("exports.id", ondelete="CASCADE"), index=True)
    camera_id: Mapped[int] = mapped_column(ForeignKey("cameras.id", ondelete="RESTRICT"))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]


class CustodyEvent(Base):
    """One event of a case's chain-of-custody record (vigil/custody.py): append-only,
    hash-linked per case (``seq`` 1, 2, ...; ``prev_hash`` the event before)."""

    __tablename__ = "custody_events"
    __table_args__ = (
        UniqueConstraint("case_id", "seq"),
        _sha256_check("prev_hash"),
        _sha256_check("event_hash"),
        CheckConstraint("seq >= 1", name="seq_positive"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"))
    seq: Mapped[int] = mapped_column(BigInteger)
    occurred_at: Mapped[datetime]
    principal_id: Mapped[int | None] = mapped_column(
        ForeignKey("principals.id", ondelete="RESTRICT"))
    actor: Mapped[str]
    action: Mapped[str]
    export_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("exports.id", ondelete="RESTRICT"), index=True)
    detail: Mapped[dict[str, Any]]
    prev_hash: Mapped[bytes]
    event_hash: Mapped[bytes] = mapped_column(unique=True)


# --- audit ---------------------------------------------------------------------------


class AuditEvent(Base):
    """Append-only, hash-chained record of who did what (vigil/audit.py)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_occurred_at", "occurred_at"),
        _sha256_check("prev_hash"),
        _sha256_check("event_hash"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    occurred_at: Mapped[datetime]
    principal_id: Mapped[int | None] = mapped_column(
        ForeignKey("principals.id", ondelete="RESTRICT"))
    actor: Mapped[str]  # the principal's name at the time, or "system"
    action: Mapped[str]
    target_type: Mapped[str | None]
    target_id: Mapped[str | None]
    detail: Mapped[dict[str, Any]]
    prev_hash: Mapped[bytes]
    event_hash: Mapped[bytes] = mapped_column(unique=True)


class AuditCheckpoint(Base):
    """A signed statement of the audit trail's head (vigil/audit.py): the last event
    covered, its hash and how many events there are up to it, itself included. A trail
    that ends before a checkpoint's event, or disagrees with its hash, has been
    truncated or altered. Append-only."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (
        _sha256_check("event_hash"),
        CheckConstraint("octet_length(signature) = 64", name="signature_len"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, index=True)  # audit_events.id
    event_hash: Mapped[bytes]
    events: Mapped[int] = mapped_column(BigInteger)
    signed_at: Mapped[datetime]
    key_id: Mapped[int] = mapped_column(ForeignKey("keys.id", ondelete="RESTRICT"))
    signature: Mapped[bytes]
