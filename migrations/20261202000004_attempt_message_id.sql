-- The provider's message id on every provider request, so a resend keeps the first
-- message's id and a delivery receipt can find its attempt by (provider, message id).
alter table delivery_attempts add column message_id text;
create index delivery_attempts_message on delivery_attempts (provider, message_id) where message_id is not null;
