-- A per-OTP salt in the PIN derivation input, so an OTP id that comes back (a request id
-- reused after the retention prune) does not bring its code back. Not secret. Rows written
-- before it keep an empty salt and the derivation they were sent with; the constant default
-- first means adding the column rewrites no row.
alter table otps add column pin_salt bytea not null default ''::bytea;
alter table otps alter column pin_salt set default uuid_send(gen_random_uuid());
