-- The provider's own error code on a failed provider request (Twilio `code`, Meta
-- `error.code`, the field Xoxzo names), beside the HTTP status that can mislead.
alter table delivery_attempts add column provider_code text;
