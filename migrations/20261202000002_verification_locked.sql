-- A check refused because the phone number has used up its failed verifications
-- (limits.verify_failures_per_phone): recorded like every other check, counting no attempt.
-- Added NOT VALID (no scan under the table lock); the next migration validates the rows.
alter table verification_attempts drop constraint verification_attempts_outcome_check;
alter table verification_attempts add constraint verification_attempts_outcome_check
    check (outcome in ('verified', 'invalid_code', 'expired', 'exhausted', 'not_pending', 'locked')) not valid;
