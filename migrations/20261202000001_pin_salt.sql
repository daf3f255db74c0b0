-- A per-OTP salt in the PIN derivation input, so an OTP id that comes back (a request id
-- reused after the retention prune) does not bring its code back. Not secret. The insert
-- that creates an OTP supplies it; rows without one (written before, or by a process of the
-- previous version during an upgrade) keep an empty salt and the derivation they were sent
-- with.
alter table otps add column pin_salt bytea not null default ''::bytea;
