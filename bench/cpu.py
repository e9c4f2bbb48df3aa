#!/usr/bin/env python3
"""CPU time per process group, for the benchmarks (who used the cores).

    cpu.py snapshot OUT NAME=PID ...   write the CPU ticks of each NAME's process tree to OUT
    cpu.py diff BEFORE AFTER           print the CPU seconds used between two snapshots (JSON)

A NAME's time is its process's utime + stime plus those of every live descendant, plus the
cutime + cstime of all of them (children already reaped: PostgreSQL backends, nginx workers that
came and went). Several NAME=PID with one NAME add up (three pods under `sticky`). The snapshot
also records the whole machine's busy and total ticks from /proc/stat, so the difference shows
what ran besides the benchmark's own processes.
"""

import json
import os
import sys

HZ = os.sysconf("SC_CLK_TCK")


def stat(pid):
    """(ppid, own ticks, reaped children's ticks) of pid, or None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime fields 14..17.
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return ppid, utime + stime, cutime + cstime


def all_processes():
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = stat(int(entry))
            if s is not None:
                procs[int(entry)] = s
    return procs


def tree_ticks(root, procs):
    children = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            _, own, reaped = procs[pid]
            total += own + reaped
        todo.extend(children.get(pid, []))
    return total


def machine_ticks():
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    idle = cpu[3] + (cpu[4] if len(cpu) > 4 else 0)  # idle + iowait
    return sum(cpu[:8]) - idle, sum(cpu[:8])


def snapshot(out, pairs):
    procs = all_processes()
    ticks, gone = {}, set()
    for pair in pairs:
        name, _, pid = pair.partition("=")
        if pid.isdigit():
            if int(pid) not in procs:
                gone.add(name)
            ticks[name] = ticks.get(name, 0) + tree_ticks(int(pid), procs)
    busy, total = machine_ticks()
    with open(out + ".tmp", "w") as f:
        json.dump({"ticks": ticks, "gone": sorted(gone), "machine_busy": busy,
                   "machine_total": total}, f)
    os.replace(out + ".tmp", out)


def diff(before_path, after_path):
    before, after = json.load(open(before_path)), json.load(open(after_path))
    # A process that was gone at either end (it exited before the second
    # reading) is not measured: NaN, left out of the sum.
    gone = set(before.get("gone", [])) | set(after.get("gone", []))
    seconds = {
        name: float("nan") if name in gone
        else round((after["ticks"][name] - before["ticks"].get(name, 0)) / HZ, 2)
        for name in after["ticks"]
    }
    ours = round(sum(v for n, v in seconds.items() if n not in gone), 2)
    machine = round((after["machine_busy"] - before["machine_busy"]) / HZ, 2)
    # /proc/stat counts per CPU: the total over the window is cores x seconds.
    window = round((after["machine_total"] - before["machine_total"]) / HZ, 2)
    print(json.dumps({"by_process": seconds, "benchmark": ours, "machine_busy": machine,
                      "others": round(max(machine - ours, 0.0), 2), "machine_capacity": window}))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "snapshot":
        snapshot(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "diff":
        diff(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
