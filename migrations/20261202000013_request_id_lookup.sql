-- The console (and operators) look OTPs up by request id, body-derived ones included,
-- which the unique index on (app, request id) does not cover: it holds only producers'
-- own ids and pending rows.
create index otps_request_id_lookup on otps (request_id);
