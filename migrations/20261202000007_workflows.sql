-- Channel workflows: the steps an OTP's code goes out on, one after another, with the same
-- code. The OTP row holds the current step's channel and provider; the scheduler claims
-- a step that is due (its timeout passed, or its delivery failed or was reported
-- undelivered) like a delivery round.
alter table apps add column workflow jsonb;

-- [{"channel": "sms", "timeoutSeconds": 60, "provider": "twilio"}, ...], providers chosen at
-- intake; null for an OTP without a workflow.
alter table otps add column workflow jsonb;
-- The step the OTP is on (0 first); null without a workflow.
alter table otps add column workflow_step smallint;
-- When the next step is due while the OTP is pending; null on the last step.
alter table otps add column step_due_at timestamptz;
create index otps_step_due on otps (step_due_at) where step_due_at is not null and status = 'pending';
