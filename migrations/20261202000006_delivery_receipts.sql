-- Delivery receipts: what a provider said about a message after taking it. Every receipt
-- that passed its provider's proof is kept; it is applied to the provider request it names
-- (by provider and message id) in the transaction that stores it, or, when it came before
-- that request was recorded, by the worker's scheduler once it is.
create table delivery_receipts (
    id bigint generated always as identity primary key,
    provider text not null,
    message_id text not null,
    -- Ours: queued < sent < delivered < read; undelivered and failed are final.
    status text not null check (status in ('queued', 'sent', 'delivered', 'read', 'undelivered', 'failed')),
    -- The provider's own words for it, and its error code.
    provider_status text not null,
    provider_code text,
    -- The receipt as the provider sent it, without any field that can carry message text.
    raw jsonb not null,
    received_at timestamptz not null default now(),
    -- Set once the receipt found its provider request.
    attempt_id bigint references delivery_attempts (id),
    otp_id uuid references otps (id),
    applied_at timestamptz
);
create index delivery_receipts_unapplied on delivery_receipts (provider, message_id) where applied_at is null;
create index delivery_receipts_otp on delivery_receipts (otp_id, id) where otp_id is not null;

-- The best a receipt has said of each provider request, and when.
alter table delivery_attempts
    add column receipt_status text check (receipt_status in ('queued', 'sent', 'delivered', 'read', 'undelivered', 'failed')),
    add column receipt_code text,
    add column receipt_at timestamptz;

-- Xoxzo tells a message's fate only when asked: one row per message still to ask about,
-- claimed by the worker's scheduler like a delivery round.
create table receipt_polls (
    attempt_id bigint primary key references delivery_attempts (id),
    provider text not null,
    message_id text not null,
    next_at timestamptz not null,
    deadline timestamptz not null,
    polls integer not null default 0
);
create index receipt_polls_due on receipt_polls (next_at);
