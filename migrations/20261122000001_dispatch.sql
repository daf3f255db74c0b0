-- Callback delivery: each outbox row carries its own delivery state, claimed by dispatchers
-- with a lease (`next_attempt_at`) and fenced by `attempts`.
alter table outbox
    add column seq bigint,
    add column state text not null default 'pending'
        check (state in ('pending', 'delivered', 'gone', 'dead', 'none')),
    add column attempts integer not null default 0,
    add column next_attempt_at timestamptz not null default now(),
    add column last_status integer,
    add column last_error text,
    add column delivered_at timestamptz,
    -- host[:port]: the unit of per-destination fairness.
    add column destination text not null generated always as (
        coalesce(substring(callback_url from '^[A-Za-z][A-Za-z0-9+.-]*://([^/?#]+)'), '')
    ) stored;

-- Commit order of an OTP's events: its state changes are serialised by the row lock on the
-- OTP, so a later change always draws a larger number. Existing rows are numbered by time.
update outbox set seq = numbered.n
from (select id, row_number() over (order by created_at, id) as n from outbox) numbered
where numbered.id = outbox.id;
alter table outbox alter column seq set not null,
    alter column seq add generated always as identity;
select setval(pg_get_serial_sequence('outbox', 'seq'), coalesce(max(seq), 0) + 1, false) from outbox;

-- Events written before there was a dispatcher: those without a URL have nowhere to go; old
-- ones are not sent out of the blue (an operator can replay them); recent ones go out.
update outbox set
    state = case when callback_url is null then 'none'
                 when created_at < now() - interval '30 minutes' then 'dead'
                 else 'pending' end,
    last_error = case when callback_url is not null and created_at < now() - interval '30 minutes'
                      then 'written before callbacks were dispatched; replay to send' end;

create index outbox_due on outbox (next_attempt_at) where state = 'pending';
create index outbox_pending_per_otp on outbox (otp_id, seq) where state = 'pending';
create index outbox_pending_per_url on outbox (app_id, callback_url) where state = 'pending';

-- One row per callback request.
create table callback_attempts (
    id bigint generated always as identity primary key,
    event_id uuid not null references outbox (id),
    attempt integer not null,
    started_at timestamptz not null,
    http_status integer,
    latency_ms integer not null,
    error text
);
create index callback_attempts_event on callback_attempts (event_id, id);

-- Wakes dispatchers (LISTEN otp_courier_outbox) when an event with somewhere to go is
-- committed; notifications of one transaction are folded into one.
create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('otp_courier_outbox', '');
    return null;
end
$$;
create trigger outbox_notify after insert on outbox
    for each row when (new.state = 'pending') execute function outbox_notify();
