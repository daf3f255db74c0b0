-- The SMS-pumping guard (otp::fraud).

-- Sends and verifications per destination prefix and country, in short buckets, so a
-- window of any length slides over them. Key: `sent:prefix:+4477009`, `verified:country:GB`.
create table fraud_counts (
    key text not null,
    bucket timestamptz not null,
    n integer not null,
    primary key (key, bucket)
);
create index fraud_counts_bucket on fraud_counts (bucket);

-- A prefix or country whose codes went unused, refused until `ends_at` unless lifted.
create table fraud_blocks (
    id bigint generated always as identity primary key,
    rule text not null,
    scope text not null check (scope in ('prefix', 'country')),
    target text not null,
    sends integer not null,
    verified integer not null,
    starts_at timestamptz not null default now(),
    ends_at timestamptz not null,
    lifted_at timestamptz,
    lifted_by text
);
create index fraud_blocks_target on fraud_blocks (scope, target, starts_at desc);
create index fraud_blocks_active on fraud_blocks (ends_at) where lifted_at is null;

-- What a rule decided about a send: refused (`enforce`) or would have refused (`shadow`).
create table fraud_verdicts (
    id bigint generated always as identity primary key,
    at timestamptz not null default now(),
    app_id text not null,
    otp_id uuid not null,
    rule text not null,
    mode text not null check (mode in ('enforce', 'shadow')),
    target text not null,
    detail text not null
);
create index fraud_verdicts_at on fraud_verdicts (at desc);
create index fraud_verdicts_app on fraud_verdicts (app_id, at desc);

-- An app's own mode per rule, over the configured default: {"conversion": "shadow"}.
alter table apps add column fraud_modes jsonb not null default '{}'::jsonb;
