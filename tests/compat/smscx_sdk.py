"""Drives otp-courier's sms.cx layer with sms.cx's own Python SDK (PyPI `smscx-client`),
its host set to our server. Speaks JSON lines with the Rust test that runs it: it prints
`{"pin_for": otpId}` when it needs the code the fake provider received and reads the code
from stdin; its last line is `{"done": {...}}` with what it saw. Any surprise raises.

Usage: smscx_sdk.py BASE_URL API_KEY
"""

import json
import sys

import smscx_client
from smscx_client.api import otp_api
from smscx_client.model.new_otp_request import NewOtpRequest


def say(line):
    print(json.dumps(line), flush=True)


def error_of(exception):
    """(HTTP status, error code, type) of an SDK exception, from their error body."""
    body = json.loads(exception.body)["error"]
    return [exception.status, body["code"], body["type"]]


def expect_error(kind, call):
    try:
        call()
    except kind as e:
        return error_of(e)
    raise AssertionError(f"expected {kind.__name__}")


def main():
    base, api_key = sys.argv[1], sys.argv[2]
    configuration = smscx_client.Configuration(host=base, api_key=api_key)
    api = otp_api.OtpApi(smscx_client.ApiClient(configuration))
    seen = {}

    # The payload of sms.cx's own example for `new_otp`, with a real number for its "xx".
    created = api.new_otp(
        NewOtpRequest(
            phone_number="+33612246400",
            country_iso="FR",
            _from="InfoText",
            template="Your verification code is {{pin}}",
            track_id="bf325375-e030-fccb-a009-17317c574773",
            ttl=180,
            max_attempts=4,
            pin_type="numbers",
            pin_length=4,
            otp_callback_url="https://webhook/receive-otp-status-updates",
        )
    )
    seen["created"] = {
        "otpId": created.otp_id,
        "trackId": created.track_id,
        "phoneNumber": created.phone_number,
        "countryIso": created.country_iso,
        "status": created.status,
        "parts": created.parts,
        "maxAttempts": created.max_attempts,
        "attempts": created.attempts,
        "ttl": created.ttl,
        "otpCallbackUrl": created.otp_callback_url,
        "lifetime": round((created.date_expires - created.date_created).total_seconds()),
    }
    read = api.get_otp_status(created.otp_id)
    seen["read"] = {"otpId": read.otp_id, "status": read.status, "ttl": read.ttl}

    say({"pin_for": created.otp_id})
    pin = sys.stdin.readline().strip()
    wrong = "0000" if pin != "0000" else "1111"
    seen["wrong_pin"] = expect_error(
        smscx_client.InvalidPinException,
        lambda: api.verify_otp(created.otp_id, wrong),
    )
    seen["verified"] = api.verify_otp(created.otp_id, pin).status
    seen["verified_again"] = expect_error(
        smscx_client.OtpAlreadyVerifiedException,
        lambda: api.verify_otp(created.otp_id, pin),
    )
    seen["after_verify"] = api.get_otp_status(created.otp_id).status

    other = api.new_otp(NewOtpRequest(phone_number="+447911123456", template="Code: {{pin}}"))
    seen["cancelled"] = api.cancel_otp(other.otp_id).info.id == other.otp_id
    seen["after_cancel"] = api.get_otp_status(other.otp_id).status
    seen["cancelled_again"] = expect_error(
        smscx_client.OtpCancelledException, lambda: api.cancel_otp(other.otp_id)
    )

    # The SDK checks ranges itself; with its checks off, the server's answer shows.
    configuration.disabled_client_side_validations = "minimum,maximum"
    seen["bad_ttl"] = expect_error(
        smscx_client.InvalidRequestException,
        lambda: api.new_otp(NewOtpRequest(phone_number="+33612246401", ttl=30, _configuration=configuration)),
    )
    seen["unknown"] = expect_error(
        smscx_client.ResourceNotFoundException,
        lambda: api.get_otp_status("a17fb13d-f4ac-4d93-9439-ef41ab8de390"),
    )
    bad_key = smscx_client.Configuration(host=base, api_key="ak_nobody.wrong")
    seen["bad_key"] = expect_error(
        smscx_client.InvalidCredentialsException,
        lambda: otp_api.OtpApi(smscx_client.ApiClient(bad_key)).get_otp_status(created.otp_id),
    )
    say({"done": seen})


if __name__ == "__main__":
    main()
