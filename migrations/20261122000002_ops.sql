-- Operator actions (replays, dead-letter requeues and purges): who, when, with which
-- filters, and how many rows or messages each touched. Kept for good.
create table operator_actions (
    id bigint generated always as identity primary key,
    action text not null,
    actor text not null,
    filters jsonb not null,
    dry_run boolean not null,
    matched integer not null,
    changed integer not null,
    at timestamptz not null default now(),
    -- Null while running, and for good if the action was cut short.
    finished_at timestamptz
);

-- A replayed callback restarts its retry schedule without resetting `attempts`, the fence:
-- the schedule step is `attempts - retry_base`. Likewise for an OTP's delivery rounds after
-- a replay or a resend: the step is `delivery_claims - claims_base`.
alter table outbox add column retry_base integer not null default 0;
alter table otps add column claims_base integer not null default 0;

-- The sweeper's work: pending OTPs by expiry, and old rows by age.
create index otps_pending_expiry on otps (expires_at) where status = 'pending';
create index otps_created on otps (created_at);
create index outbox_created on outbox (created_at) where state <> 'pending';
