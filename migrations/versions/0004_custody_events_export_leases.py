"""custody events, export leases

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 07:51:53.298456
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('custody_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('case_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('occurred_at', postgresql.TIMESTAMP(timezone=True), nullable=False),
    sa.Column('principal_id', sa.BigInteger(), nullable=True),
    sa.Column('actor', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('export_id', sa.UUID(), nullable=True),
    sa.Column('detail', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('prev_hash', sa.LargeBinary(), nullable=False),
    sa.Column('event_hash', sa.LargeBinary(), nullable=False),
    sa.CheckConstraint('octet_length(event_hash) = 32', name=op.f('ck_custody_events_event_hash_len')),
    sa.CheckConstraint('octet_length(prev_hash) = 32', name=op.f('ck_custody_events_prev_hash_len')),
    sa.CheckConstraint('seq >= 1', name=op.f('ck_custody_events_seq_positive')),
    sa.ForeignKeyConstraint(['case_id'], ['cases.id'], name=op.f('fk_custody_events_case_id_cases'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['export_id'], ['exports.id'], name=op.f('fk_custody_events_export_id_exports'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['principal_id'], ['principals.id'], name=op.f('fk_custody_events_principal_id_principals'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_custody_events')),
    sa.UniqueConstraint('case_id', 'seq', name=op.f('uq_custody_events_case_id_seq')),
    sa.UniqueConstraint('event_hash', name=op.f('uq_custody_events_event_hash'))
    )
    op.create_index(op.f('ix_custody_events_export_id'), 'custody_events', ['export_id'], unique=False)
    op.add_column('exports', sa.Column('lease_owner', sa.Text(), nullable=True))
    op.add_column('exports', sa.Column('lease_expires_at', postgresql.TIMESTAMP(timezone=True), nullable=True))
    op.add_column('exports', sa.Column('attempts', sa.SmallInteger(), server_default=sa.text('0'), nullable=False))
    op.add_column('exports', sa.Column('package_data_key_id', sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f('fk_exports_package_data_key_id_data_keys'), 'exports', 'data_keys', ['package_data_key_id'], ['id'], ondelete='RESTRICT')
    # Custody records are append-only, as the audit trail (function from 0001).
    op.execute("""
        CREATE TRIGGER custody_events_append_only
        BEFORE UPDATE OR DELETE OR TRUNCATE ON custody_events
        FOR EACH STATEMENT EXECUTE FUNCTION vigil_refuse_change();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER custody_events_append_only ON custody_events")
    op.drop_constraint(op.f('fk_exports_package_data_key_id_data_keys'), 'exports', type_='foreignkey')
    op.drop_column('exports', 'package_data_key_id')
    op.drop_column('exports', 'attempts')
    op.drop_column('exports', 'lease_expires_at')
    op.drop_column('exports', 'lease_owner')
    op.drop_index(op.f('ix_custody_events_export_id'), table_name='custody_events')
    op.drop_table('custody_events')
