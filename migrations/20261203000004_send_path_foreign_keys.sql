-- The send path's rows keep their links without foreign keys. A foreign key check runs a
-- query per inserted row and locks the parent row (FOR KEY SHARE): every OTP locked its
-- app's single row, so concurrent batches of one app shared that lock through multixacts,
-- and every event, provider request and callback attempt locked its OTP or event again.
-- Measured (docs/BENCHMARKS.md, "Where the time goes"): these four checks were about a
-- third of PostgreSQL's CPU per OTP.
--
-- What keeps the links instead:
-- - an OTP is inserted only for an app the worker or the API has just read, and apps are
--   never deleted;
-- - events and callback attempts are written by the transaction that has just changed their
--   OTP or event (UPDATE ... RETURNING), so a parent deleted meanwhile leaves nothing to
--   write; provider requests are written for a pending OTP this process holds the delivery
--   lease of, and the sweeper deletes only OTPs that are no longer pending;
-- - the sweeper deletes children first and a parent only once none is left, as before.
-- Every integration test ends by checking that no row of these four lost its parent.
alter table otps drop constraint otps_app_id_fkey;
alter table outbox drop constraint outbox_otp_id_fkey;
alter table delivery_attempts drop constraint delivery_attempts_otp_id_fkey;
alter table callback_attempts drop constraint callback_attempts_event_id_fkey;
