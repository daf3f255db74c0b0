-- A dispatcher's lease on an event gets its own column, outside every index, so a claim
-- (which bumps `attempts` and sets the lease) is a HOT update: a new row version on the
-- same page and no new index entries. `next_attempt_at` now only says when an event is
-- due; it is the lease no more. Rows already claimed keep their lease in
-- `next_attempt_at` until it ends, which holds them off just the same. Dispatchers of an
-- earlier version do not see this lease: stop them before migrating, or they may send an
-- event a new dispatcher holds a second time (same `webhook-id`; the fence keeps its state).
alter table outbox add column leased_until timestamptz;
-- Room on each page for the claim's new row version (pages filled from now on).
alter table outbox set (fillfactor = 80);

-- Every pending event was in six indexes, each written again by every claim. Two served
-- statements off the hot path that `outbox_pending_by_destination` serves too: the backlog
-- gauge, and the other pending events to a URL that answered 410 (now found among the
-- pending events of its host). (`outbox_pending_per_otp` stays: without it the claim's
-- check for an OTP's earlier pending events was planned as a scan of every pending event,
-- once per candidate.)
drop index outbox_due;
drop index outbox_pending_per_url;
