-- The console filters OTPs by country and by the last digits of the number. The country
-- (ISO 3166-1, from the numbering plan) is written at intake; older rows keep null. The
-- suffix filter reads the reversed number as a prefix, which a text_pattern_ops index serves.
alter table otps add column country text;
create index otps_phone_suffix on otps (reverse(phone_number) text_pattern_ops);
create index otps_country_created on otps (country, created_at desc) where country is not null;
