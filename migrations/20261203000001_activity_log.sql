-- The app-wide activity log (`GET /v1/logs`) reads an app's events newest first, a page at
-- a time, with the event's sequence number as the cursor.
create index outbox_app_seq on outbox (app_id, seq desc);
-- Operators read every app's log the same way.
create index outbox_seq on outbox (seq desc);
