"""Save and resume workflow state with lmdbstate (the README's library example)."""

import sys

from lmdbstate import CheckpointStore

path = sys.argv[1] if len(sys.argv) > 1 else ".lmdbstate"
with CheckpointStore(path) as store:
    for job in ("etl-2026-11-27", "report-weekly", "agent-chat-42"):
        state = {"rows": [], "cursor": 0}
        for step in ("extract", "transform", "load"):
            state["rows"].append({"step": step, "ok": True})
            state["cursor"] += 100
            info = store.put(job, state, step=step)  # durable when it returns
        store.set_status(job, "completed")
        print(f"{job}: {info.seq} checkpoints, last step {info.step!r}")
    resumed = store.latest("etl-2026-11-27")  # digest verified before decoding
    assert resumed is not None
    assert resumed.state["cursor"] == 300
