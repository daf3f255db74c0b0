-- Apps (tenants) and their defaults.
create table apps (
    id text primary key check (id ~ '^[A-Za-z0-9_.-]{1,64}$'),
    name text not null,
    default_from text,
    -- The app's templates: "" is the default, other keys are BCP-47 tags.
    templates jsonb not null default '{}',
    -- Recorded as the locale when the plain default template is used.
    default_locale text not null default 'en',
    default_ttl_seconds integer check (default_ttl_seconds between 60 and 1800),
    callback_url text,
    -- Channel -> provider name; channels missing here use the configured routing.
    routing jsonb not null default '{}',
    -- When set, AMQP jobs are accepted only with this validated user-id property.
    broker_user text,
    -- ISO 3166-1 regions the app may send to; null allows all.
    country_allowlist text[],
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

-- One row per OTP. The PIN is never stored: it is derived from (pin_key_id, id, generation).
create table otps (
    id uuid primary key,
    app_id text not null references apps (id),
    request_id text not null,
    request_id_derived boolean not null,
    phone_number text not null,
    channel text not null check (channel in ('sms', 'whatsapp')),
    sender text,
    locale text not null,
    -- The chosen template's source (with {{pin}}, never a PIN).
    template text not null,
    parts integer not null,
    provider text not null,
    pin_type text not null check (pin_type in ('numbers', 'letters', 'alphanumeric')),
    pin_length smallint not null check (pin_length between 4 and 10),
    pin_key_id text not null,
    generation integer not null default 1,
    status text not null default 'pending'
        check (status in ('pending', 'verified', 'expired', 'failed', 'cancelled', 'max_attempts_reached', 'rejected')),
    delivery text not null default 'queued'
        check (delivery in ('queued', 'sending', 'sent', 'delivered', 'undelivered', 'failed')),
    attempts integer not null default 0,
    max_attempts smallint not null check (max_attempts between 1 and 10),
    ttl_seconds integer not null check (ttl_seconds between 60 and 1800),
    expires_at timestamptz not null,
    callback_url text,
    metadata jsonb,
    -- Delivery claims so far. A claim bumps it; a result is recorded only where it still
    -- matches, so a process whose claim was taken over cannot overwrite the newer outcome.
    delivery_claims integer not null default 0,
    -- While queued: when the next delivery round is due. While sending: when the claim
    -- lapses and another process may take the delivery over.
    next_attempt_at timestamptz,
    provider_message_id text,
    last_error jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    sent_at timestamptz
);

-- Producer keys deduplicate for ever; keys derived from the body only while the OTP is
-- pending, so the same person asking again later gets a new OTP.
create unique index otps_request_id on otps (app_id, request_id)
    where (not request_id_derived or status = 'pending');
create index otps_due on otps (next_attempt_at) where delivery in ('queued', 'sending');
create index otps_app_created on otps (app_id, created_at desc);

-- Every provider request, for the attempts API and for diagnosing providers.
create table delivery_attempts (
    id bigint generated always as identity primary key,
    otp_id uuid not null references otps (id),
    claim integer not null,
    provider text not null,
    started_at timestamptz not null,
    latency_ms integer not null,
    outcome text not null check (outcome in ('accepted', 'transient', 'permanent')),
    http_status integer,
    error text
);
create index delivery_attempts_otp on delivery_attempts (otp_id, id);

-- Jobs refused before an OTP existed (unparseable, invalid, unknown app, ...).
create table otp_rejections (
    id uuid primary key,
    app_id text,
    request_id text,
    reason text not null,
    detail text not null,
    body_bytes integer not null,
    created_at timestamptz not null default now()
);
create index otp_rejections_app_created on otp_rejections (app_id, created_at desc);

-- The transactional outbox: one row per status event, written in the transaction that
-- made the change. The dispatcher turns rows with a callback URL into signed callbacks.
create table outbox (
    id uuid primary key,
    otp_id uuid references otps (id),
    app_id text not null,
    event_type text not null,
    callback_url text,
    payload jsonb not null,
    created_at timestamptz not null default now()
);
create index outbox_otp on outbox (otp_id, created_at);
