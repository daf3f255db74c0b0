-- One notification per inserting statement instead of a PL/pgSQL call per row: events are
-- written in batches (the worker's sent records, the sweeper's expiries), and PostgreSQL
-- folds a transaction's notifications into one anyway.
drop trigger outbox_notify on outbox;
drop function outbox_notify();
create function outbox_notify() returns trigger language plpgsql as $$
begin
    if exists (select 1 from inserted where state = 'pending') then
        perform pg_notify('otp_courier_outbox', '');
    end if;
    return null;
end
$$;
create trigger outbox_notify after insert on outbox
    referencing new table as inserted
    for each statement execute function outbox_notify();
