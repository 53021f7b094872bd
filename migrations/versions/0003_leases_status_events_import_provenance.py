"""leases, status events, import provenance

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 05:51:44.192338
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('camera_leases',
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('recorder_id', sa.Text(), nullable=False),
    sa.Column('acquired_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('expires_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_camera_leases_camera_id_cameras'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('camera_id', name=op.f('pk_camera_leases'))
    )
    op.create_table('camera_status_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('camera_id', sa.BigInteger(), nullable=False),
    sa.Column('changed_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    # The type exists since 0001: reuse it, do not create it again.
    sa.Column('status', postgresql.ENUM(name='camera_status', create_type=False), nullable=False),
    sa.Column('recorder_id', sa.Text(), nullable=False),
    sa.Column('detail', sa.Text(), server_default='', nullable=False),
    sa.ForeignKeyConstraint(['camera_id'], ['cameras.id'], name=op.f('fk_camera_status_events_camera_id_cameras'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_camera_status_events'))
    )
    op.create_index('ix_camera_status_events_camera_id_changed_at', 'camera_status_events', ['camera_id', 'changed_at'], unique=False)
    op.add_column('chunks', sa.Column('provenance', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('chunks', 'provenance')
    op.drop_index('ix_camera_status_events_camera_id_changed_at', table_name='camera_status_events')
    op.drop_table('camera_status_events')
    op.drop_table('camera_leases')
