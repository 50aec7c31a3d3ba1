"""A real SMTP server for the notify tests (Debian's python3-aiosmtpd).

usage: smtp_server.py PORT OUTDIR [USER PASSWORD]
Each accepted message is written to OUTDIR/NNNN.msg as:
  MAIL FROM line, RCPT TO line, AUTH line, blank line, then the raw message.
With USER and PASSWORD, AUTH is required (over plain text: auth_require_tls=False).
A message containing REFUSE-ME-FOR-GOOD is refused with a permanent 554.
Prints READY on stdout once listening; runs until killed.
"""
import os
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port = int(sys.argv[1])
outdir = sys.argv[2]
creds = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
count = 0


class Handler:
    async def handle_DATA(self, server, session, envelope):
        global count
        if b"REFUSE-ME-FOR-GOOD" in (envelope.original_content or b""):
            return "554 5.7.1 message refused by policy"
        count += 1
        login = getattr(session, "auth_data", None)
        if isinstance(login, bytes):
            login = login.decode()
        head = "MAIL FROM: %s\nRCPT TO: %s\nAUTH: %s\n\n" % (
            envelope.mail_from, " ".join(envelope.rcpt_tos), login or "-")
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        tmp = os.path.join(outdir, ".%04d.tmp" % count)
        with open(tmp, "wb") as f:
            f.write(head.encode() + data)
        os.rename(tmp, os.path.join(outdir, "%04d.msg" % count))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (creds is not None
          and auth_data.login.decode() == creds[0]
          and auth_data.password.decode() == creds[1])
    return AuthResult(success=ok, handled=False,
                      auth_data=auth_data.login if ok else None)


kwargs = {}
if creds:
    kwargs = dict(authenticator=authenticator, auth_required=True,
                  auth_require_tls=False)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
print("READY", flush=True)
while True:
    time.sleep(3600)
