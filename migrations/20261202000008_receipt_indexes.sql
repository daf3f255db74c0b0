-- Retention deletes provider requests, whose receipts reference them; the worker reads
-- only the last hour of receipts still waiting for their request; a provider's notice
-- looks up the polls of a message.
create index delivery_receipts_attempt on delivery_receipts (attempt_id) where attempt_id is not null;
create index delivery_receipts_waiting on delivery_receipts (received_at) where applied_at is null;
create index receipt_polls_message on receipt_polls (provider, message_id);
