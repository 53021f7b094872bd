"""chain heads, checkpoints, recording gaps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 05:44:10.811250
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('chain_heads',
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('chain_hash', sa.LargeBinary(), nullable=False),
    sa.Column('updated_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('octet_length(chain_hash) = 32', name=op.f('ck_chain_heads_chain_hash_len')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_chain_heads_camera_id_cameras'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('camera_id', name=op.f('pk_chain_heads'))
    )
    op.create_table('checkpoints',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('chain_hash', sa.LargeBinary(), nullable=False),
    sa.Column('signed_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('key_id', sa.BigInteger(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.CheckConstraint('octet_length(chain_hash) = 32', name=op.f('ck_checkpoints_chain_hash_len')),
    sa.CheckConstraint('octet_length(signature) = 64', name=op.f('ck_checkpoints_signature_len')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_checkpoints_camera_id_cameras'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['key_id'], ['keys.id'], name=op.f('fk_checkpoints_key_id_keys'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_checkpoints'))
    )
    op.create_index('ix_checkpoints_camera_id_seq', 'checkpoints', ['camera_id', 'seq'], unique=False)
    op.create_table('recording_gaps',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('start_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('end_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('cause', sa.Enum('disconnect', 'stream_error', 'recorder_stopped', 'spool_full', name='gap_cause'), nullable=False),
    sa.Column('detail', sa.Text(), server_default='', nullable=False),
    sa.Column('created_at', postgresql.TIMESTAMP(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('end_at > start_at', name=op.f('ck_recording_gaps_interval_nonempty')),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_recording_gaps_camera_id_cameras'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recording_gaps'))
    )
    op.create_index('ix_recording_gaps_camera_id_start_at', 'recording_gaps', ['camera_id', 'start_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_recording_gaps_camera_id_start_at', table_name='recording_gaps')
    op.drop_table('recording_gaps')
    op.drop_index('ix_checkpoints_camera_id_seq', table_name='checkpoints')
    op.drop_table('checkpoints')
    op.drop_table('chain_heads')
    op.execute("DROP TYPE gap_cause")
