-- API credentials: a key id shown in clear, a secret stored only as its SHA-256 (secrets are
-- 32 random bytes, so a fast hash is enough). app_id null = an operator key.
create table api_keys (
    id text primary key,
    app_id text references apps (id),
    role text not null check (role in ('app', 'operator')),
    secret_sha256 bytea not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz,
    check ((role = 'app') = (app_id is not null))
);
create index api_keys_app on api_keys (app_id) where revoked_at is null;

-- Webhook signing secrets (whsec_...). They must be usable for signing, so they are kept;
-- during rotation every secret not yet expired signs.
create table webhook_secrets (
    id bigint generated always as identity primary key,
    app_id text not null references apps (id),
    secret text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz
);
create index webhook_secrets_app on webhook_secrets (app_id);

alter table otps
    add column resends integer not null default 0,
    add column verified_at timestamptz,
    add column status_changed_at timestamptz not null default now();

-- One row per verification call that reached an OTP.
create table verification_attempts (
    id bigint generated always as identity primary key,
    otp_id uuid not null references otps (id),
    at timestamptz not null default now(),
    outcome text not null check (outcome in ('verified', 'invalid_code', 'expired', 'exhausted', 'not_pending'))
);
create index verification_attempts_otp on verification_attempts (otp_id, id);

-- Fixed-window counters shared by every process: one atomic upsert per hit.
create table rate_limit_windows (
    key text not null,
    window_start timestamptz not null,
    hits integer not null,
    primary key (key, window_start)
);

-- Why an OTP ended rejected (rate limits), beside the status.
alter table otps add column rejection_reason text;
