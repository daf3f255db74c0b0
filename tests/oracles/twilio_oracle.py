"""Twilio's own Python library as a test oracle (PyPI `twilio`), never used by the product.

  sign TOKEN URL ALGORITHM PARAMS_JSON   the X-Twilio-Signature its RequestValidator computes
  message PARAMS_JSON                    the request its client makes for messages.create(**params),
                                         recorded by an HTTP client that sends nothing
"""

import json
import sys

from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client


class Recorder(HttpClient):
    """Keeps the request and answers as Twilio would, without any network."""

    def __init__(self):
        super().__init__(logger=None, is_async=False)
        self.requests = []

    def request(self, method, url, params=None, data=None, headers=None, auth=None, timeout=None,
                allow_redirects=False):
        self.requests.append({"method": method, "url": url, "data": data, "auth": list(auth or [])})
        body = {"sid": "SM00000000000000000000000000000000", "status": "queued"}
        return Response(201, json.dumps(body))


def main():
    command = sys.argv[1]
    if command == "sign":
        token, url, algorithm, params = sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
        print(RequestValidator(token).compute_signature(url, params, algorithm), end="")
    elif command == "message":
        params = json.loads(sys.argv[2])
        recorder = Recorder()
        client = Client("AC00000000000000000000000000000000", "token", http_client=recorder)
        client.messages.create(**params)
        print(json.dumps(recorder.requests[0]))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
