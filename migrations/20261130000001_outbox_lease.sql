-- A dispatcher's lease on an event gets its own column, outside every index, so a claim
-- (which bumps `attempts` and sets the lease) is a HOT update: a new row version on the
-- same page and no new index entries. `next_attempt_at` now only says when an event is
-- due; it is the lease no more. Rows already claimed keep their lease in
-- `next_attempt_at` until it ends, which holds them off just the same.
alter table outbox add column leased_until timestamptz;
-- Room on each page for the claim's new row version.
alter table outbox set (fillfactor = 80);

-- Every pending event was in six indexes, each written again by every claim. Three served
-- statements that other indexes serve as well: an OTP's earlier pending events are found
-- through `outbox_otp` (an OTP has a handful of events), the other pending events to a URL
-- that answered 410 through `outbox_pending_by_destination`, the backlog gauge too.
drop index outbox_due;
drop index outbox_pending_per_otp;
drop index outbox_pending_per_url;
