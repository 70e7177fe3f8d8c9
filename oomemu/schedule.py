"""Replay strings and schedule files: a controlled run, given back to its user in one pasteable line.

A replay string is `oomemu1:` followed by the URL-safe base64 of a zlib-compressed msgpack map:

    v          the oomemu version that recorded it
    kernel     the kernel profile (machine.kernel)
    hash       sha256 (first 16 hex digits) of the resolved scenario, schedule keys left out
    scenario   the resolved scenario itself (scenario_to_dict), so the string is self-contained
    strategy   random | pct (the strategy that chose; a replay of a replay keeps the original's)
    seed, pct_depth, pct_steps
    steps      how many scheduling points the run passed
    choices    a hash of the (row, steps) schedule
    log        the schedule as varint-encoded (row, steps) pairs when it is short (PCT schedules are),
               else absent: the strategy and seed then regenerate it and `steps`/`choices` verify it

`schedule.bin` in the run directory holds the same map with the whole log (msgpack, uncompressed), so a
schedule of any length replays choice by choice (`oomemu run --schedule replay --replay schedule.bin`).
"""
import base64
import dataclasses
import hashlib
import json
import zlib

import msgpack

from oomemu.errors import ScenarioError
from oomemu.version import __version__

PREFIX = "oomemu1:"
MAX_LOG_BYTES = 3000     # a schedule longer than this (encoded) stays out of the string
_SCHEDULE_KEYS = ("seed", "schedule", "pct_depth", "pct_steps", "wall_seconds")


class ReplayError(ScenarioError):
    """A replay string or schedule file that cannot be used here (exit status 2); the message says which part."""


def scenario_hash(scenario):
    """The resolved scenario's hash, without the keys that only choose the schedule."""
    from oomemu.config import scenario_to_dict
    from oomemu.config.load import scenario_from_dict
    # validated again, so a value set in code (seconds = 2) hashes as the file's would (2.0)
    doc = scenario_to_dict(scenario_from_dict(scenario_to_dict(scenario), name="hash", source="<hash>"))
    for key in _SCHEDULE_KEYS:
        doc["run"].pop(key, None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def choices_hash(pairs):
    h = hashlib.sha256()
    for row, run in pairs:
        h.update(b"%d:%d;" % (row, run))
    return h.hexdigest()[:16]


def _varints(values):
    out = bytearray()
    for v in values:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _unvarints(data):
    values, v, shift = [], 0, 0
    for b in data:
        v |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
        else:
            values.append(v)
            v, shift = 0, 0
    if shift:
        raise ReplayError("replay string: its schedule is truncated")
    return values


def encode_log(pairs):
    return _varints(v for pair in pairs for v in pair)


def decode_log(data):
    flat = _unvarints(data)
    if len(flat) % 2:
        raise ReplayError("replay string: its schedule is truncated")
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def record_of(scenario, schedule):
    """The map a replay string and schedule.bin carry, for a finished controlled run."""
    from oomemu.config import scenario_to_dict
    run = scenario.run
    pairs = [tuple(p) for p in schedule["log"]]
    return {"v": __version__, "kernel": scenario.machine.kernel, "hash": scenario_hash(scenario),
            "scenario": scenario_to_dict(scenario), "name": scenario.name,
            "strategy": schedule.get("strategy", run.schedule), "seed": run.seed, "pct_depth": run.pct_depth,
            "pct_steps": run.pct_steps, "steps": schedule["steps"], "choices": choices_hash(pairs),
            "log": encode_log(pairs)}


def replay_string(record):
    """The one pasteable line for `record` (its log dropped when long)."""
    doc = dict(record)
    if len(doc["log"]) > MAX_LOG_BYTES:
        doc.pop("log")
    packed = zlib.compress(msgpack.packb(doc, use_bin_type=True), 9)
    return PREFIX + base64.urlsafe_b64encode(packed).decode().rstrip("=")


def parse_replay_string(text):
    """The record in a replay string; ReplayError (one line) for anything malformed."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise ReplayError(f"not a replay string (it must start with {PREFIX!r})")
    body = text[len(PREFIX):]
    try:
        packed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, TypeError):
        raise ReplayError("replay string: not valid base64 (was it cut when pasted?)") from None
    try:
        raw = zlib.decompress(packed)
    except zlib.error:
        raise ReplayError("replay string: truncated or corrupted (it does not decompress)") from None
    try:
        doc = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise ReplayError("replay string: corrupted (its content does not decode)") from None
    return _checked(doc, "replay string")


def save_schedule(path, record):
    path.write_bytes(msgpack.packb(record, use_bin_type=True))


def load_schedule(path):
    """The record in a schedule.bin file, or in a text file holding a replay string."""
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise ReplayError(f"--replay {path}: {exc.strerror}") from None
    if data.lstrip().startswith(PREFIX.encode()):
        return parse_replay_string(data.decode(errors="replace"))
    try:
        doc = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise ReplayError(f"--replay {path}: not a schedule file (schedule.bin) or a replay string") from None
    return _checked(doc, f"--replay {path}")


_FIELDS = {"v": str, "kernel": str, "hash": str, "scenario": dict, "strategy": str, "seed": int,
           "pct_depth": int, "pct_steps": int, "steps": int, "choices": str}


def _checked(doc, what):
    if not isinstance(doc, dict):
        raise ReplayError(f"{what}: corrupted (not a schedule record)")
    for key, kind in _FIELDS.items():
        if not isinstance(doc.get(key), kind):
            raise ReplayError(f"{what}: corrupted or truncated (field {key!r} missing)")
    if doc["v"] != __version__:
        raise ReplayError(f"{what}: recorded by oomemu {doc['v']}, this is oomemu {__version__}; "
                          f"replay it with that version")
    return doc


def scenario_of(record, scenario=None):
    """The scenario to replay: the one the record embeds, or `scenario` (which must hash the same)."""
    from oomemu.config.load import scenario_from_dict
    embedded = scenario_from_dict(record["scenario"], name=record.get("name", "replay"), source="<replay>")
    if scenario_hash(embedded) != record["hash"]:
        raise ReplayError("replay string: corrupted (its scenario does not match its hash)")
    if scenario is not None:
        mine = scenario_hash(scenario)
        if mine != record["hash"]:
            raise ReplayError(f"the scenario differs from the one the schedule was recorded on (scenario hash "
                              f"{mine}, recorded {record['hash']}): it was edited since")
        if scenario.machine.kernel != record["kernel"]:
            raise ReplayError(f"the kernel profile differs: {scenario.machine.kernel}, recorded {record['kernel']}")
        base = scenario
    else:
        base = embedded
    pairs = decode_log(record["log"]) if "log" in record else None
    run = dataclasses.replace(base.run, seed=record["seed"], pct_depth=record["pct_depth"],
                              pct_steps=record["pct_steps"],
                              schedule="replay" if pairs is not None else record["strategy"])
    return dataclasses.replace(base, run=run), pairs


def first_difference(a, b):
    """The first step at which two (row, steps) schedules choose differently, or None if equal."""
    step, i, j = 0, 0, 0
    a, b = [list(p) for p in a], [list(p) for p in b]
    while i < len(a) and j < len(b):
        if a[i][0] != b[j][0]:
            return step + 1
        n = min(a[i][1], b[j][1])
        step += n
        a[i][1] -= n
        b[j][1] -= n
        i += a[i][1] == 0
        j += b[j][1] == 0
    return None if i == len(a) and j == len(b) else step + 1


def normalised_trace(run_dir):
    """The run's trace as comparable rows (virtual ts, cpu row, event, pid, a0..a4), in trace order; the
    controlled modes promise the same rows for the same seed (the host pid in `sched_token` is zeroed)."""
    import numpy as np

    from oomemu.trace.events import EVENT_ID
    from oomemu.trace.reader import load_trace
    recs = load_trace(run_dir).records
    # one total order, independent of how the supervisor's drains batched the rings: (ts, cpu row, ring order)
    ring_order = np.zeros(len(recs), dtype=np.int64)
    for row in np.unique(recs["cpu"]).tolist():
        mine = np.flatnonzero(recs["cpu"] == row)
        ring_order[mine] = np.arange(len(mine))
    recs = recs[np.lexsort((ring_order, recs["cpu"], recs["ts"]))]
    cols = [recs["ts"], recs["cpu"], recs["event"], recs["pid"]] + [recs["a"][:, i] for i in range(5)]
    out = np.stack(cols, axis=1) if len(recs) else np.empty((0, 9), dtype=np.int64)
    out[out[:, 2] == EVENT_ID["sched_token"], 8] = 0     # the OS pid of the process: not the schedule's
    return out


def first_differing_event(dir_a, dir_b):
    """None if two runs' normalised traces are equal, else a one-line description of the first difference."""
    from oomemu.trace.events import EVENT_NAME
    a, b = normalised_trace(dir_a), normalised_trace(dir_b)
    n = min(len(a), len(b))
    diff = (a[:n] != b[:n]).any(axis=1).nonzero()[0]
    if not len(diff):
        if len(a) == len(b):
            return None
        i = n
        extra, which = (a, dir_a) if len(a) > n else (b, dir_b)
        r = extra[i]
        return f"record {i}: only {which} has {EVENT_NAME.get(int(r[2]), r[2])} on cpu row {r[1]} at {r[0]} ns"
    i = int(diff[0])

    def show(r):
        return (f"{EVENT_NAME.get(int(r[2]), r[2])}(cpu row {r[1]}, pid {r[3]}, args {list(map(int, r[4:]))}) "
                f"at {r[0]} ns")
    return f"record {i}: {show(a[i])} vs {show(b[i])}"
