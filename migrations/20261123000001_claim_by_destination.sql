-- The dispatcher walks the destinations that have pending events and takes each one's due
-- events in order, up to its free share of the per-destination cap. A destination at its
-- cap then costs one index probe per claim instead of a scan of its whole backlog (which
-- made a large backlog to one receiver drain at tens of events per second).
create index outbox_pending_by_destination on outbox (destination, next_attempt_at) where state = 'pending';
