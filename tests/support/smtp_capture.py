"""A real SMTP server for renderswarm's alert tests (aiosmtpd), which records
every mail it accepts so a test can check what arrived.

    /usr/bin/python3 smtp_capture.py --port PORT --out FILE [--refuse FLAGFILE]

- Listens on 127.0.0.1:PORT (0 = any free port) and prints
  `LISTENING <port>` on stdout once connections are accepted, so a test
  waits for that line instead of sleeping.
- Appends one JSON line per accepted mail to FILE: mail_from, rcpt_tos,
  the decoded subject, from and to headers and plain-text body, and the raw
  message. The line is written before the server answers 250, so a client
  that got 250 will find it.
- While FLAGFILE exists, every mail is answered with its content instead
  (e.g. `451 4.3.0 Try again later` or `550 5.1.1 No such user`).
- With env CAPTURE_AUTH_USER and CAPTURE_AUTH_PASSWORD set, AUTH PLAIN and
  LOGIN are offered (over plain text: loopback only) and required.
"""

import argparse
import asyncio
import email
import email.policy
import json
import logging
import os
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult


class Capture:
    def __init__(self, out, refuse):
        self.out = out
        self.refuse = refuse
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refuse and os.path.exists(self.refuse):
            with open(self.refuse, encoding="utf-8") as f:
                return f.read().strip()
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        body = msg.get_body(preferencelist=("plain",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(msg["subject"] or ""),
            "from": str(msg["from"] or ""),
            "to": str(msg["to"] or ""),
            "body": body.get_content().replace("\r\n", "\n") if body is not None else "",
            "raw": raw.decode("utf-8", "replace"),
        }
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.count += 1
        return f"250 2.0.0 Ok: captured as {self.count}"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        # handled=False: let aiosmtpd answer 535 on failure (the default,
        # handled=True, answers nothing and leaves the client waiting).
        return AuthResult(success=ok, handled=False)

    return check


async def main():
    # The test runner's output is for test failures: keep aiosmtpd quiet
    # (it warns, rightly, that AUTH without TLS is unsafe off loopback).
    warnings.filterwarnings("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--refuse")
    args = p.parse_args()
    handler = Capture(args.out, args.refuse)
    user = os.environ.get("CAPTURE_AUTH_USER")
    password = os.environ.get("CAPTURE_AUTH_PASSWORD")
    options = {}
    if user and password:
        options = {
            "authenticator": authenticator(user, password),
            "auth_required": True,
            "auth_require_tls": False,
        }
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="capture.test", **options), "127.0.0.1", args.port
    )
    port = server.sockets[0].getsockname()[1]
    print(f"LISTENING {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
