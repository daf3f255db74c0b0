-- An OTP's workflow as the API shows it: the steps (channel and timeout, not the provider
-- or template chosen), the step it is on and, while pending, when the next is due.
create function otp_workflow_view(workflow jsonb, step smallint, status text, due timestamptz)
returns jsonb language sql immutable as $$
    select case when workflow is not null then jsonb_build_object(
        'steps', (select jsonb_agg(jsonb_build_object('channel', s->'channel', 'timeoutSeconds', s->'timeoutSeconds'))
                  from jsonb_array_elements(workflow) s),
        'step', step,
        'nextStepAt', case when status = 'pending' then due end) end
$$;
