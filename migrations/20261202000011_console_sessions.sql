-- Ops console sessions: an operator signs in with an operator key and gets a session
-- cookie; only the token's SHA-256 is kept, with the CSRF token its forms carry.
create table console_sessions (
    token_sha256 bytea primary key,
    key_id text not null references api_keys (id),
    csrf text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    ended_at timestamptz
);
create index console_sessions_expires on console_sessions (expires_at);
