-- Validates the outcome check of the previous migration; this scan takes a lock that lets
-- verifications go on writing.
alter table verification_attempts validate constraint verification_attempts_outcome_check;
