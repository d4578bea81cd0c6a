# An exclusive bot for vigil's cluster tests and `vigil-bench cluster`: every 50 ms, while its
# lease lets it (vigil_agent.fence_ok()), it places an "order": a row in PostgreSQL with its
# fencing epoch, its node and the database's clock. Two runs' orders must never interleave.
import os, signal, subprocess, time
import vigil_agent
url, node, epoch = os.environ["ACTS_URL"], os.environ["VIGIL_NODE"], vigil_agent.fence_epoch()
stopping = False
def term(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, term)
while not stopping:
    if vigil_agent.fence_ok():
        subprocess.run(["psql", url, "-qXc",
            f"INSERT INTO acts (epoch, node, at) VALUES ({epoch}, '{node}', clock_timestamp())"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.05)
