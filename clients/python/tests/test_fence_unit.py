"""fence_ok() reads the lease file vigil keeps for an exclusive agent: valid only for this
run's epoch, this boot, and a deadline still ahead; any doubt is False."""

import json
import time

import vigil_agent


def boot_id() -> str:
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def now_ms() -> int:
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)


def lease_file(tmp_path, **fields):
    lease = {"agent": "trader", "epoch": 7, "boot_id": boot_id(),
             "valid_until_boottime_ms": now_ms() + 5_000, "valid_until_unix_ms": 0}
    lease.update(fields)
    path = tmp_path / "trader.json"
    path.write_text(json.dumps(lease))
    return {"VIGIL_FENCE": "7", "VIGIL_FENCE_FILE": str(path)}


def test_an_agent_that_is_not_exclusive_has_nothing_to_fence():
    assert vigil_agent.fence_ok({}) is True
    assert vigil_agent.fence_epoch({}) is None


def test_a_lease_ahead_for_this_epoch_and_boot_is_ok(tmp_path):
    env = lease_file(tmp_path)
    assert vigil_agent.fence_ok(env) is True
    assert vigil_agent.fence_epoch(env) == 7


def test_a_lapsed_lease_is_not_ok(tmp_path):
    assert vigil_agent.fence_ok(lease_file(tmp_path, valid_until_boottime_ms=now_ms() - 1)) is False


def test_a_newer_epoch_means_another_run_holds_it(tmp_path):
    assert vigil_agent.fence_ok(lease_file(tmp_path, epoch=8)) is False


def test_a_file_from_another_boot_is_never_valid(tmp_path):
    env = lease_file(tmp_path, boot_id="00000000-0000-0000-0000-000000000000")
    assert vigil_agent.fence_ok(env) is False


def test_any_doubt_is_not_ok(tmp_path):
    env = lease_file(tmp_path)
    (tmp_path / "trader.json").write_text("{not json")
    assert vigil_agent.fence_ok(env) is False
    (tmp_path / "trader.json").unlink()
    assert vigil_agent.fence_ok(env) is False
    env = lease_file(tmp_path, valid_until_boottime_ms="soon")
    assert vigil_agent.fence_ok(env) is False
    env = lease_file(tmp_path)
    env["VIGIL_FENCE"] = "not a number"
    assert vigil_agent.fence_ok(env) is False
