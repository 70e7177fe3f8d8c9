"""`oomemu trace show|export RUN_DIR`: print a run's trace as text, or export it for Perfetto / chrome://tracing."""
import sys
from pathlib import Path


def add_arguments(p):
    sub = p.add_subparsers(dest="trace_command", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="print the trace as text, one record a line, in timestamp order",
                          description="Print a run's trace records as text, one a line, in timestamp order: "
                                      "[seconds] row pid PID event arg=value ...")
    show.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding trace.msgpack)")
    show.add_argument("--task", type=int, metavar="PID",
                      help="only records of task PID, and records naming PID in an argument (victim_pid=, ...)")
    show.add_argument("--event", nargs="+", action="extend", metavar="NAME",
                      help="only these events (names or glob patterns such as 'oom_*'; repeatable)")
    show.add_argument("--limit", type=_non_negative, metavar="N", help="print at most N lines")

    export = sub.add_parser("export", help="write the trace as Chrome trace-event JSON (Perfetto, chrome://tracing)",
                            description="Write a run's trace as Chrome trace-event JSON: one track per CPU and per "
                                        "kswapd, with slowpath, direct reclaim, OOM critical section, kswapd and "
                                        "sleep slices and OOM instant events.")
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holding trace.msgpack)")
    export.add_argument("--format", choices=["chrome"], default="chrome", help="output format (default: chrome)")
    export.add_argument("-o", "--output", metavar="FILE",
                        help="output file, '-' for stdout (default: RUN_DIR/trace.chrome.json)")


def _non_negative(text):
    import argparse
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid count: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def _error(message):
    print(f"oomemu: error: {message}", file=sys.stderr)
    return 2


def _load(run_dir):
    """(trace, None) or (None, exit status) after printing one line on stderr."""
    path = Path(run_dir)
    if not path.is_dir():
        return None, _error(f"{run_dir}: no such run directory")
    from oomemu.cli.check import batch_hint
    hint = batch_hint(path)
    if hint and not (path / "trace.msgpack").exists():
        return None, _error(hint)
    if not (path / "trace.msgpack").is_file():
        return None, _error(f"{path / 'trace.msgpack'}: not found (was the run traced?)")
    import msgpack
    from oomemu.trace.reader import load_trace
    try:
        trace = load_trace(path)
        header = trace.header
        if not isinstance(header, dict) or header.get("format") != "oomemu-trace":
            raise ValueError("not an oomemu trace header")
    except (msgpack.exceptions.UnpackException, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError) as exc:
        reason = str(exc) or type(exc).__name__
        return None, _error(f"{path / 'trace.msgpack'}: corrupt trace ({reason})")
    except OSError as exc:
        return None, _error(f"{path / 'trace.msgpack'}: {exc.strerror or exc}")
    if trace.lost:
        print(f"oomemu: warning: {trace.lost} trace records were lost (a ring overflowed); "
              "slices and lines may be missing", file=sys.stderr)
    if not trace.complete:
        print("oomemu: warning: the trace has no end marker (the run did not finish cleanly)", file=sys.stderr)
    return trace, None


def execute(args):
    trace, status = _load(args.run_dir)
    if trace is None:
        return status
    if args.trace_command == "show":
        return _show(trace, args)
    return _export(trace, args)


def _show(trace, args):
    from oomemu.trace.export import Formatter, match_events, select
    event_ids = None
    if args.event:
        try:
            event_ids = match_events(trace, args.event)
        except KeyError as exc:
            import difflib
            near = difflib.get_close_matches(exc.args[0], list(trace.event_id), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; see oomemu/trace/events.py"
            return _error(f"--event {exc.args[0]}: no such event in this trace{hint}")
    idx = select(trace, args.task, event_ids)
    if args.limit is not None:
        idx = idx[:args.limit]
    try:
        out = sys.stdout
        for line in Formatter(trace).lines(idx):
            out.write(line + "\n")
        out.flush()
    except BrokenPipeError:
        return _stdout_closed()
    if not len(idx):
        print("oomemu: no records match", file=sys.stderr)
    return 0


def _stdout_closed():
    """The reader went away (`| head`): stop quietly, and keep the interpreter's final flush from failing."""
    import os
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _export(trace, args):
    from oomemu.trace.export import write_chrome_trace
    out = args.output if args.output is not None else str(Path(args.run_dir) / "trace.chrome.json")
    try:
        write_chrome_trace(trace, out, source=args.run_dir)
    except BrokenPipeError:
        return _stdout_closed()
    except OSError as exc:
        return _error(f"{out}: cannot write: {exc.strerror or exc}")
    if out != "-":
        print(out)
    return 0
