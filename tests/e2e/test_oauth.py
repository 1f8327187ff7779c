"""End to end: a node on OAuth (docs/servicenow-api.md §6.2; docs/configuration.md).

The private node uses `auth = oauth` (password grant with a client id and a client secret from a
0600 file) against an emulator whose access tokens live 4 seconds, so a sync that lasts longer
needs the refresh_token grant: incidents and comments still flow both ways, the emulator's log
shows the token requests, and no API call of the node was turned away with a 401.
"""

import os
import time
import unittest

from harness import ConnectedTest, wait_until

TOKEN_TTL_S = 4


class OAuthTest(ConnectedTest):

    GLOBEX_ARGS = ("--oauth-client", "twinsync-client:client-secret-1",
                   "--token-ttl", str(TOKEN_TTL_S))

    @classmethod
    def prepare(cls, world):
        secret = os.path.join(world.priv.dir, "client-secret")
        with open(secret, "w") as f:
            f.write("client-secret-1")
        os.chmod(secret, 0o600)
        world.priv.servicenow_extra = ["auth = oauth", "client_id = twinsync-client",
                                       "client_secret_file = %s" % secret]

    def test_sync_outlives_the_access_token(self):
        w = self.world
        a = w.acme.create(short_description="oauth first", urgency="1", comments="hello over oauth")
        b = self.twin(w.globex, a["sys_id"])
        wait_until(lambda: [e["value"] for e in w.globex.journal(b["sys_id"])]
                   == ["[acme] alice wrote:\nhello over oauth"], what="comment on globex")
        time.sleep(TOKEN_TTL_S + 1.5)  # the first access token has expired
        w.acme.update(a["sys_id"], short_description="oauth later")
        wait_until(lambda: w.globex.get(b["sys_id"])["short_description"] == "oauth later",
                   timeout=30, what="update after the token expired\n" + w.logs())
        c = w.globex.create(short_description="from globex", urgency="1", comments="bob here")
        d = self.twin(w.acme, c["sys_id"])
        wait_until(lambda: [e["value"] for e in w.acme.journal(d["sys_id"])]
                   == ["[globex] bob wrote:\nbob here"], what="comment on acme")
        log = w.globex.log()
        tokens = [r for r in log if r["path"] == "/oauth_token.do"]
        self.assertGreaterEqual(len(tokens), 2, "a new token after the first one expired")
        self.assertTrue(all(r["status"] == 200 for r in tokens), tokens)
        api = [r for r in log if r["path"].startswith("/api/") and r["user"] == "sync"]
        self.assertTrue(api, "the node's API calls were made as the integration user")
        trail = ["%s %s %s %d %s" % (r["time"], r["method"], r["path"], r["status"], r["user"])
                 for r in log if r["path"] == "/oauth_token.do" or r["status"] == 401]
        self.assertEqual([r for r in log if r["path"].startswith("/api/") and r["status"] == 401],
                         [], "no API call of the node was refused:\n" + "\n".join(trail))
        status = w.priv.cli_json("connection", "show", w.conn)
        self.assertEqual(status["status"], "active")


if __name__ == "__main__":
    unittest.main()
