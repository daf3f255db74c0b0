-- A transaction may wake the dispatchers itself, after it commits, instead of through this
-- trigger: it sets `otp_courier.notify = off` for itself (SET LOCAL). PostgreSQL holds its
-- notification lock from a notifying transaction's commit until the commit is flushed, so
-- notifying transactions commit one at a time; the HTTP API's verifications, one event per
-- transaction, commit side by side this way.
create or replace function outbox_notify() returns trigger language plpgsql as $$
begin
    if current_setting('otp_courier.notify', true) is distinct from 'off'
       and exists (select 1 from inserted where state = 'pending') then
        perform pg_notify('otp_courier_outbox', '');
    end if;
    return null;
end
$$;
