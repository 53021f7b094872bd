"""tiered access (camera sets), OIDC principals and revoked JWTs, export approval,
signed audit checkpoints

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 12:26:19.105911
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_checkpoints',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('event_hash', sa.LargeBinary(), nullable=False),
    sa.Column('events', sa.BigInteger(), nullable=False),
    sa.Column('signed_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('key_id', sa.BigInteger(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.CheckConstraint('octet_length(event_hash) = 32', name=op.f('ck_audit_checkpoints_event_hash_len')),
    sa.CheckConstraint('octet_length(signature) = 64', name=op.f('ck_audit_checkpoints_signature_len')),
    sa.ForeignKeyConstraint(['key_id'], ['keys.id'], name=op.f('fk_audit_checkpoints_key_id_keys'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_checkpoints'))
    )
    op.create_index(op.f('ix_audit_checkpoints_event_id'), 'audit_checkpoints', ['event_id'], unique=False)
    op.create_table('approval_policies',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('region_id', sa.BigInteger(), nullable=True),
    sa.Column('max_duration_s', sa.Integer(), nullable=True),
    sa.Column('sensitive_cameras', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_by', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('max_duration_s IS NULL OR max_duration_s > 0', name=op.f('ck_approval_policies_max_duration_positive')),
    sa.ForeignKeyConstraint(['created_by'], ['principals.id'], name=op.f('fk_approval_policies_created_by_principals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['region_id'], ['regions.id'], name=op.f('fk_approval_policies_region_id_regions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_approval_policies'))
    )
    op.create_index('uq_approval_policies_default', 'approval_policies', [sa.literal_column('(true)')], unique=True, postgresql_where=sa.text('region_id IS NULL'))
    op.create_index('uq_approval_policies_region_id', 'approval_policies', ['region_id'], unique=True, postgresql_where=sa.text('region_id IS NOT NULL'))
    op.create_table('principal_cameras',
    sa.Column('principal_id', sa.BigInteger(), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('added_by', sa.BigInteger(), nullable=True),
    sa.Column('added_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['added_by'], ['principals.id'], name=op.f('fk_principal_cameras_added_by_principals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_principal_cameras_camera_id_cameras'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_principal_cameras_principal_id_principals'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('principal_id', 'camera_id', name=op.f('pk_principal_cameras'))
    )
    op.create_index(op.f('ix_principal_cameras_camera_id'), 'principal_cameras', ['camera_id'], unique=False)
    op.create_table('revoked_jwts',
    sa.Column('jti', sa.Text(), nullable=False),
    sa.Column('issuer', sa.Text(), nullable=False),
    sa.Column('expires_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('revoked_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_by', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['revoked_by'], ['principals.id'], name=op.f('fk_revoked_jwts_revoked_by_principals'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('jti', name=op.f('pk_revoked_jwts'))
    )
    op.create_index(op.f('ix_revoked_jwts_expires_at'), 'revoked_jwts', ['expires_at'], unique=False)
    approval_state = postgresql.ENUM('not_required', 'pending', 'approved', 'rejected',
                                     name='approval_state')
    approval_state.create(op.get_bind())
    op.add_column('exports', sa.Column('approval', postgresql.ENUM('not_required', 'pending', 'approved', 'rejected', name='approval_state', create_type=False), server_default='not_required', nullable=False))
    op.add_column('exports', sa.Column('approval_reason', sa.Text(), nullable=True))
    op.add_column('exports', sa.Column('decided_by', sa.BigInteger(), nullable=True))
    op.add_column('exports', sa.Column('decided_at', postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.add_column('exports', sa.Column('decision_note', sa.Text(), nullable=True))
    op.create_foreign_key(op.f('fk_exports_decided_by_principals'), 'exports', 'principals', ['decided_by'], ['id'], ondelete='RESTRICT')
    op.add_column('principals', sa.Column('oidc_issuer', sa.Text(), nullable=True))
    op.add_column('principals', sa.Column('oidc_subject', sa.Text(), nullable=True))
    op.add_column('principals', sa.Column('last_seen_at', postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.create_unique_constraint(op.f('uq_principals_oidc_issuer_oidc_subject'), 'principals', ['oidc_issuer', 'oidc_subject'])
    op.create_check_constraint(op.f('ck_principals_oidc_identity_complete'), 'principals',
                               '(oidc_issuer IS NULL) = (oidc_subject IS NULL)')
    # Signed checkpoints are evidence of the trail's length: append-only, as the trail.
    op.execute("""
        CREATE TRIGGER audit_checkpoints_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_checkpoints
        FOR EACH STATEMENT EXECUTE FUNCTION vigil_refuse_change();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_checkpoints_append_only ON audit_checkpoints")
    op.drop_constraint(op.f('ck_principals_oidc_identity_complete'), 'principals', type_='check')
    op.drop_constraint(op.f('uq_principals_oidc_issuer_oidc_subject'), 'principals', type_='unique')
    op.drop_column('principals', 'last_seen_at')
    op.drop_column('principals', 'oidc_subject')
    op.drop_column('principals', 'oidc_issuer')
    op.drop_constraint(op.f('fk_exports_decided_by_principals'), 'exports', type_='foreignkey')
    op.drop_column('exports', 'decision_note')
    op.drop_column('exports', 'decided_at')
    op.drop_column('exports', 'decided_by')
    op.drop_column('exports', 'approval_reason')
    op.drop_column('exports', 'approval')
    postgresql.ENUM(name='approval_state').drop(op.get_bind())
    op.drop_index(op.f('ix_revoked_jwts_expires_at'), table_name='revoked_jwts')
    op.drop_table('revoked_jwts')
    op.drop_index(op.f('ix_principal_cameras_camera_id'), table_name='principal_cameras')
    op.drop_table('principal_cameras')
    op.drop_index('uq_approval_policies_region_id', table_name='approval_policies', postgresql_where=sa.text('region_id IS NOT NULL'))
    op.drop_index('uq_approval_policies_default', table_name='approval_policies', postgresql_where=sa.text('region_id IS NULL'))
    op.drop_table('approval_policies')
    op.drop_index(op.f('ix_audit_checkpoints_event_id'), table_name='audit_checkpoints')
    op.drop_table('audit_checkpoints')
