-- The website a Xoxzo-dialect client names in its OTP requests (`apps create --website`),
-- normalised to scheme://host[:port]; one app per website.
alter table apps add column website text;
create unique index apps_website on apps (website) where website is not null;
-- The body shape of the app's status callbacks: ours, or sms.cx's `otp_update` for apps that
-- moved from sms.cx; either way signed the Standard Webhooks way.
alter table apps add column callback_format text not null default 'standard'
    check (callback_format in ('standard', 'smscx'));
