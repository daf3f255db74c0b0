-- The voice channel: a call that reads the code. Calls have their own country allowlist
-- per app (voice pumping costs more than SMS); null: the app's country_allowlist.
alter table otps drop constraint otps_channel_check;
alter table otps add constraint otps_channel_check check (channel in ('sms', 'whatsapp', 'voice'));
alter table apps add column voice_country_allowlist text[];
-- What a poll asks about: a message or a call.
alter table receipt_polls add column channel text not null default 'sms';
