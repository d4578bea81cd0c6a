"""The run's token (VIGIL_AGENT_TOKEN) appears in no log, message or repr, whatever happens."""

from __future__ import annotations

from pathlib import Path

from conftest import Vigil, free_port

SCRIPT = """
from vigil_agent import Checkpoint, CheckpointConflict, Client
token = os.environ["VIGIL_AGENT_TOKEN"]
with open("token.secret", "w") as f:      # for the test to search for; not a log
    f.write(token)

c = vigil_agent.default_client()
print("client:", repr(c), vars(c))
print("env:", vigil_agent._env.Environment.read())
vigil_agent.heartbeat()                   # HTTP heartbeat without an api check: 409, warned
vigil_agent.degraded("testing secrecy", until=30)
vigil_agent.ok()
cp = Checkpoint()
print("checkpoint:", repr(cp), cp.save({"a": 1}))
try:
    other = Checkpoint()
    other.version = 0          # a writer that missed version 1
    other.save({"a": 2})
except CheckpointConflict as e:
    print("conflict:", repr(e), e)
# vigil unreachable, with the real token
agent = os.environ["VIGIL_AGENT"]
away = Client(url="http://127.0.0.1:%d" % PORT, agent=agent, token=token)
away.degraded("away", until=10)
print("away:", Checkpoint(client=away, directory="away").save({"a": 3}), repr(away))
# a token vigil does not know: 401
stale = Client(url=os.environ["VIGIL_URL"], agent=agent, token=token[:-4] + "AAAA")
stale.degraded("stale", until=10)
print("stale:", Checkpoint(client=stale, directory="stale").save({"a": 4}))
emit("done")
while True:
    time.sleep(1)
"""


def test_the_token_is_never_printed(vigil: Vigil) -> None:
    vigil.write_config(
        {
            "bot": {
                "checks": [{"kind": "exec", "command": ["true"], "interval": "30s"}],
                "script": f"PORT = {free_port()}\n" + SCRIPT,
            }
        }
    )
    vigil.start()
    vigil.result("bot", "done")
    token = (vigil.root / "bot" / "token.secret").read_text()
    assert token.startswith("vat_") and len(token) > 20
    log = vigil.agent_log("bot")
    # The paths this test means to exercise were taken (and logged, at DEBUG or above).
    assert "client: Client(agent='bot'" in log
    assert "conflict:" in log and "away: None" in log and "stale: None" in log
    assert "no longer accepts this run's token" in log
    assert "does not count HTTP heartbeats" in log

    vigil.shutdown()
    searched = 0
    for path in Path(vigil.root).rglob("*"):
        if path.is_file() and path.name != "token.secret":
            searched += 1
            data = path.read_bytes()
            assert token.encode() not in data, f"the token is in {path}"
            assert token[4:20].encode() not in data, f"part of the token is in {path}"
    assert searched > 5
