"""retention: tombstones, retention records, export holds

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('tombstones',
    sa.Column('chunk_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('start_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('end_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('object_key', sa.Text(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('chain_hash', sa.LargeBinary(), nullable=False),
    sa.Column('data_key_id', sa.BigInteger(), nullable=False),
    sa.Column('row', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('keep_days', sa.Integer(), nullable=False),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('sweep_id', sa.UUID(), nullable=False),
    sa.Column('object_deleted_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('key_destroyed_at', postgresql.TIMESTAMP(timezone=True), nullable=True),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_tombstones_camera_id_cameras'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['data_key_id'], ['data_keys.id'], name=op.f('fk_tombstones_data_key_id_data_keys'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('chunk_id', name=op.f('pk_tombstones')),
    sa.UniqueConstraint('camera_id', 'seq', name=op.f('uq_tombstones_camera_id_seq')),
    sa.UniqueConstraint('object_key', name=op.f('uq_tombstones_object_key'))
    )
    op.create_table('retention_records',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('chunks', sa.BigInteger(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('start_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('end_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('last_chain_hash', sa.LargeBinary(), nullable=False),
    sa.Column('keep_days', sa.Integer(), nullable=False),
    sa.Column('rule', sa.Text(), nullable=False),
    sa.Column('sweep_id', sa.UUID(), nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('chunks = last_seq - first_seq + 1', name=op.f('ck_retention_records_chunks_count')),
    sa.CheckConstraint('last_seq >= first_seq', name=op.f('ck_retention_records_seq_range')),
    sa.CheckConstraint('octet_length(last_chain_hash) = 32', name=op.f('ck_retention_records_last_chain_hash_len')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_retention_records_camera_id_cameras'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_retention_records'))
    )
    op.create_index('ix_retention_records_camera_id_last_seq', 'retention_records', ['camera_id', 'last_seq'], unique=False)
    op.add_column('holds', sa.Column('export_id', sa.UUID(), nullable=True))
    op.add_column('holds', sa.Column('locked_at', postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.add_column('holds', sa.Column('unlocked_at', postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.create_index(op.f('ix_holds_export_id'), 'holds', ['export_id'], unique=False)
    op.create_foreign_key(op.f('fk_holds_export_id_exports'), 'holds', 'exports', ['export_id'], ['id'], ondelete='RESTRICT')
    # What retention removed is part of the record, as the audit trail (function from 0001).
    op.execute("""
        CREATE TRIGGER retention_records_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON retention_records
        FOR EACH STATEMENT EXECUTE FUNCTION vigil_refuse_change();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER retention_records_append_only ON retention_records")
    op.drop_constraint(op.f('fk_holds_export_id_exports'), 'holds', type_='foreignkey')
    op.drop_index(op.f('ix_holds_export_id'), table_name='holds')
    op.drop_column('holds', 'unlocked_at')
    op.drop_column('holds', 'locked_at')
    op.drop_column('holds', 'export_id')
    op.drop_index('ix_retention_records_camera_id_last_seq', table_name='retention_records')
    op.drop_table('retention_records')
    op.drop_table('tombstones')
