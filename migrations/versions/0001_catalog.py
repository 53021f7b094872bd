"""catalog: regions, cameras, the chunk time index, keys, retention, holds,
cases, exports, audit events, principals, tokens and roles

Revision ID: 0001
Revises:
Create Date: 2026-11-21 05:22:48.629866
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('keys',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('purpose', sa.Enum('kek', 'checkpoint_signing', 'package_signing', 'audit_signing', name='key_purpose'), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('provider_ref', sa.Text(), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=True),
    sa.Column('fingerprint', sa.Text(), nullable=True),
    sa.Column('state', sa.Enum('active', 'retired', 'destroyed', name='key_state'), server_default='active', nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('retired_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('destroyed_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_keys')),
    sa.UniqueConstraint('purpose', 'version', name=op.f('uq_keys_purpose_version'))
    )
    op.create_table('regions',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('parent_id', sa.BigInteger(), nullable=True),
    sa.Column('level', sa.Enum('province', 'city', 'county', 'township', 'village', name='region_level'), nullable=False),
    sa.Column('code', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['regions.id'], name=op.f('fk_regions_parent_id_regions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_regions')),
    sa.UniqueConstraint('code', name=op.f('uq_regions_code'))
    )
    op.create_index(op.f('ix_regions_parent_id'), 'regions', ['parent_id'], unique=False)
    op.create_index('ix_regions_path', 'regions', ['path'], unique=False, postgresql_ops={'path': 'text_pattern_ops'})
    op.create_table('roles',
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_roles'))
    )
    op.create_table('cameras',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('source_url', sa.Text(), nullable=False),
    sa.Column('region_id', sa.BigInteger(), nullable=True),
    sa.Column('chunk_target_s', sa.SmallInteger(), server_default=sa.text('60'), nullable=False),
    sa.Column('status', sa.Enum('pending', 'recording', 'reconnecting', 'offline', 'disabled', name='camera_status'), server_default='pending', nullable=False),
    sa.Column('sensitive', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('chunk_target_s BETWEEN 2 AND 300', name=op.f('ck_cameras_chunk_target_range')),
    sa.ForeignKeyConstraint(['region_id'], ['regions.id'], name=op.f('fk_cameras_region_id_regions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cameras')),
    sa.UniqueConstraint('name', name=op.f('uq_cameras_name'))
    )
    op.create_index(op.f('ix_cameras_region_id'), 'cameras', ['region_id'], unique=False)
    op.create_table('data_keys',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('kek_id', sa.BigInteger(), nullable=False),
    sa.Column('wrapped', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('destroyed_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint('(wrapped IS NULL) = (destroyed_at IS NOT NULL)', name=op.f('ck_data_keys_destroyed_iff_no_key')),
    sa.ForeignKeyConstraint(['kek_id'], ['keys.id'], name=op.f('fk_data_keys_kek_id_keys'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_keys'))
    )
    op.create_index(op.f('ix_data_keys_kek_id'), 'data_keys', ['kek_id'], unique=False)
    op.create_table('principals',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('role', sa.Text(), nullable=False),
    sa.Column('region_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('disabled_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['region_id'], ['regions.id'], name=op.f('fk_principals_region_id_regions'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['role'], ['roles.name'], name=op.f('fk_principals_role_roles'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_principals')),
    sa.UniqueConstraint('name', name=op.f('uq_principals_name'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('principal_id', sa.BigInteger(), nullable=False),
    sa.Column('token_hash', sa.LargeBinary(), nullable=False),
    sa.Column('display_prefix', sa.String(length=16), nullable=False),
    sa.Column('label', sa.Text(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('revoked_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('last_used_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint('octet_length(token_hash) = 32', name=op.f('ck_api_tokens_token_hash_len')),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_api_tokens_principal_id_principals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_principal_id'), 'api_tokens', ['principal_id'], unique=False)
    op.create_table('audit_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('occurred_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('principal_id', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('target_type', sa.Text(), nullable=True),
    sa.Column('target_id', sa.Text(), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(), nullable=False),
    sa.Column('event_hash', sa.LargeBinary(), nullable=False),
    sa.CheckConstraint('octet_length(event_hash) = 32', name=op.f('ck_audit_events_event_hash_len')),
    sa.CheckConstraint('octet_length(prev_hash) = 32', name=op.f('ck_audit_events_prev_hash_len')),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_audit_events_principal_id_principals'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events')),
    sa.UniqueConstraint('event_hash', name=op.f('uq_audit_events_event_hash'))
    )
    op.create_index('ix_audit_events_occurred_at', 'audit_events', ['occurred_at'], unique=False)
    op.create_table('cases',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('reference', sa.Text(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('status', sa.Enum('open', 'closed', name='case_status'), server_default='open', nullable=False),
    sa.Column('region_id', sa.BigInteger(), nullable=True),
    sa.Column('created_by', sa.BigInteger(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('closed_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint("(status = 'closed') = (closed_at IS NOT NULL)", name=op.f('ck_cases_closed_iff_closed_at')),
    sa.ForeignKeyConstraint(['created_by'], ['principals.id'], name=op.f('fk_cases_created_by_principals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['region_id'], ['regions.id'], name=op.f('fk_cases_region_id_regions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cases')),
    sa.UniqueConstraint('reference', name=op.f('uq_cases_reference'))
    )
    op.create_table('chunks',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('start_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('end_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('media_duration_us', sa.BigInteger(), nullable=False),
    sa.Column('clock_source', sa.Enum('rtcp', 'receive', 'import', name='clock_source'), nullable=False),
    sa.Column('plaintext_bytes', sa.BigInteger(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('object_key', sa.Text(), nullable=False),
    sa.Column('sha256', sa.LargeBinary(), nullable=False),
    sa.Column('chain_hash', sa.LargeBinary(), nullable=False),
    sa.Column('data_key_id', sa.BigInteger(), nullable=False),
    sa.Column('codec', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("end_at - start_at <= interval '600 seconds'", name=op.f('ck_chunks_interval_bounded')),
    sa.CheckConstraint('end_at > start_at', name=op.f('ck_chunks_interval_nonempty')),
    sa.CheckConstraint('media_duration_us > 0', name=op.f('ck_chunks_media_duration_positive')),
    sa.CheckConstraint('octet_length(chain_hash) = 32', name=op.f('ck_chunks_chain_hash_len')),
    sa.CheckConstraint('octet_length(sha256) = 32', name=op.f('ck_chunks_sha256_len')),
    sa.CheckConstraint('plaintext_bytes > 0 AND stored_bytes > 0', name=op.f('ck_chunks_sizes_positive')),
    sa.CheckConstraint('seq >= 0', name=op.f('ck_chunks_seq_nonnegative')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_chunks_camera_id_cameras'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_chunks_data_key_id_data_keys'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chunks')),
    sa.UniqueConstraint('camera_id', 'seq', name=op.f('uq_chunks_camera_id_seq')),
    sa.UniqueConstraint('data_key_id', name=op.f('uq_chunks_data_key_id')),
    sa.UniqueConstraint('object_key', name=op.f('uq_chunks_object_key'))
    )
    op.create_index('ix_chunks_camera_id_start_at', 'chunks', ['camera_id', 'start_at'], unique=False, postgresql_include=['end_at'])
    op.create_table('retention_rules',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=True),
    sa.Column('region_id', sa.BigInteger(), nullable=True),
    sa.Column('keep_days', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.BigInteger(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('NOT (camera_id IS NOT NULL AND region_id IS NOT NULL)', name=op.f('ck_retention_rules_one_scope')),
    sa.CheckConstraint('keep_days > 0', name=op.f('ck_retention_rules_keep_days_positive')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_retention_rules_camera_id_cameras'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['created_by'], ['principals.id'], name=op.f('fk_retention_rules_created_by_principals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['region_id'], ['regions.id'], name=op.f('fk_retention_rules_region_id_regions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retention_rules'))
    )
    op.create_index('uq_retention_rules_camera_id', 'retention_rules', ['camera_id'], unique=True, postgresql_where=sa.text('camera_id IS NOT NULL'))
    op.create_index('uq_retention_rules_default', 'retention_rules', [sa.literal_column('(true)')], unique=True, postgresql_where=sa.text('camera_id IS NULL AND region_id IS NULL'))
    op.create_index('uq_retention_rules_region_id', 'retention_rules', ['region_id'], unique=True, postgresql_where=sa.text('region_id IS NOT NULL'))
    op.create_table('case_members',
    sa.Column('case_id', sa.BigInteger(), nullable=False),
    sa.Column('principal_id', sa.BigInteger(), nullable=False),
    sa.Column('added_by', sa.BigInteger(), nullable=False),
    sa.Column('added_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['added_by'], ['principals.id'], name=op.f('fk_case_members_added_by_principals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_case_members_case_id_cases'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_case_members_principal_id_principals'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('case_id', 'principal_id', name=op.f('pk_case_members'))
    )
    op.create_index(op.f('ix_case_members_principal_id'), 'case_members', ['principal_id'], unique=False)
    op.create_table('exports',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('case_id', sa.BigInteger(), nullable=False),
    sa.Column('requested_by', sa.BigInteger(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=True),
    sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', name='export_status'), server_default='queued', nullable=False),
    sa.Column('stage', sa.Text(), server_default='queued', nullable=False),
    sa.Column('progress_pct', sa.SmallInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('package_key', sa.Text(), nullable=True),
    sa.Column('package_sha256', sa.LargeBinary(), nullable=True),
    sa.Column('package_bytes', sa.BigInteger(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('started_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('finished_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.CheckConstraint('octet_length(package_sha256) = 32', name=op.f('ck_exports_package_sha256_len')),
    sa.CheckConstraint('progress_pct BETWEEN 0 AND 100', name=op.f('ck_exports_progress_range')),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_exports_case_id_cases'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['requested_by'], ['principals.id'], name=op.f('fk_exports_requested_by_principals'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exports'))
    )
    op.create_index(op.f('ix_exports_case_id'), 'exports', ['case_id'], unique=False)
    op.create_table('holds',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('case_id', sa.BigInteger(), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('start_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('end_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.BigInteger(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('released_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('released_by', sa.BigInteger(), nullable=True),
    sa.Column('release_reason', sa.Text(), nullable=True),
    sa.CheckConstraint('(released_at IS NULL) = (released_by IS NULL) AND (released_at IS NULL) = (release_reason IS NULL)', name=op.f('ck_holds_release_complete')),
    sa.CheckConstraint('end_at > start_at', name=op.f('ck_holds_interval_nonempty')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_holds_camera_id_cameras'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_holds_case_id_cases'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['created_by'], ['principals.id'], name=op.f('fk_holds_created_by_principals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['released_by'], ['principals.id'], name=op.f('fk_holds_released_by_principals'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_holds'))
    )
    op.create_index('ix_holds_camera_id_start_at', 'holds', ['camera_id', 'start_at'], unique=False)
    op.create_index(op.f('ix_holds_case_id'), 'holds', ['case_id'], unique=False)
    op.create_table('export_items',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('export_id', sa.UUID(), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('start_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('end_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.CheckConstraint('end_at > start_at', name=op.f('ck_export_items_interval_nonempty')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_export_items_camera_id_cameras'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['export_id'], ['exports.id'], name=op.f('fk_export_items_export_id_exports'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_export_items'))
    )
    op.create_index(op.f('ix_export_items_export_id'), 'export_items', ['export_id'], unique=False)

    roles = sa.table("roles", sa.column("name", sa.Text), sa.column("description", sa.Text))
    op.bulk_insert(roles, [
        {"name": "admin", "description":
            "registers cameras, sets retention rules, places and lifts holds, manages keys"},
        {"name": "investigator", "description":
            "finds footage, opens cases, exports clips, downloads packages"},
        {"name": "auditor", "description":
            "verifies packages and reads the audit trail"},
        {"name": "recorder", "description": "service account that writes chunks; nothing else"},
    ])

    # The audit trail is append-only: the database itself refuses to change it.
    op.execute("""
        CREATE FUNCTION vigil_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$;
    """)
    op.execute("""
        CREATE TRIGGER audit_events_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_events
        FOR EACH STATEMENT EXECUTE FUNCTION vigil_refuse_change();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
    op.execute("DROP FUNCTION vigil_refuse_change()")
    op.drop_index(op.f('ix_export_items_export_id'), table_name='export_items')
    op.drop_table('export_items')
    op.drop_index(op.f('ix_holds_case_id'), table_name='holds')
    op.drop_index('ix_holds_camera_id_start_at', table_name='holds')
    op.drop_table('holds')
    op.drop_index(op.f('ix_exports_case_id'), table_name='exports')
    op.drop_table('exports')
    op.drop_index(op.f('ix_case_members_principal_id'), table_name='case_members')
    op.drop_table('case_members')
    op.drop_index('uq_retention_rules_region_id', table_name='retention_rules', postgresql_where=sa.text('region_id IS NOT NULL'))
    op.drop_index('uq_retention_rules_default', table_name='retention_rules', postgresql_where=sa.text('camera_id IS NULL AND region_id IS NULL'))
    op.drop_index('uq_retention_rules_camera_id', table_name='retention_rules', postgresql_where=sa.text('camera_id IS NOT NULL'))
    op.drop_table('retention_rules')
    op.drop_index('ix_chunks_camera_id_start_at', table_name='chunks', postgresql_include=['end_at'])
    op.drop_table('chunks')
    op.drop_table('cases')
    op.drop_index('ix_audit_events_occurred_at', table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_index(op.f('ix_api_tokens_principal_id'), table_name='api_tokens')
    op.drop_table('api_tokens')
    op.drop_table('principals')
    op.drop_index(op.f('ix_data_keys_kek_id'), table_name='data_keys')
    op.drop_table('data_keys')
    op.drop_index(op.f('ix_cameras_region_id'), table_name='cameras')
    op.drop_table('cameras')
    op.drop_table('roles')
    op.drop_index('ix_regions_path', table_name='regions', postgresql_ops={'path': 'text_pattern_ops'})
    op.drop_index(op.f('ix_regions_parent_id'), table_name='regions')
    op.drop_table('regions')
    op.drop_table('keys')
    for enum in ("export_status", "case_status", "clock_source", "key_state", "key_purpose",
                 "camera_status", "region_level"):
        op.execute(f"DROP TYPE {enum}")
