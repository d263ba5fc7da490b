#!/usr/bin/env python
"""Generate the flag tables of docs/cli.md from the argparse parsers the CLI itself uses.

    python jobs/docs_cli.py            rewrite every generated block of docs/cli.md in place
    python jobs/docs_cli.py --check    exit 1 (and name the commands) if docs/cli.md is out of date
    python jobs/docs_cli.py --print    print the generated blocks instead of writing

For each command of `halopaint.cli.COMMANDS` the parser is built exactly as `halopaint <cmd> --help`
builds it (`halopaint.cli.build_parser(only=cmd)`), and its usage line and one table row per argument
(flag, value, default, help with `%(default)s` expanded) are written between the markers

    <!-- BEGIN GENERATED: halopaint CMD (python jobs/docs_cli.py) -->
    <!-- END GENERATED: halopaint CMD -->

A command with no markers yet gets a new `## halopaint CMD` section with them, appended at the end of the
file (the prose around the markers is written by hand and never touched). The blocks hold no paths,
dates or machine-dependent values, so regenerating an unchanged CLI changes nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED: halopaint {cmd} (python jobs/docs_cli.py) -->"
END = "<!-- END GENERATED: halopaint {cmd} -->"


def _subparser(cmd: str) -> argparse.ArgumentParser:
    from halopaint.cli import build_parser
    parser = build_parser(only=cmd)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[cmd]
    raise SystemExit(f"docs_cli: no subcommand {cmd!r} in halopaint.cli.build_parser()")


def _cell(text: str) -> str:
    """One Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _flags(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}` (positional)"
    return ", ".join(f"`{o}`" for o in action.option_strings)


def _value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "—"
    if action.choices is not None:
        return " \\| ".join(f"`{c}`" for c in action.choices)
    metavar = action.metavar
    if isinstance(metavar, tuple):
        text = " ".join(metavar)
    else:
        text = metavar or action.dest.upper()
    if action.nargs in ("+", "*"):
        text += " …"
    elif isinstance(action.nargs, int) and action.nargs > 1 and not isinstance(metavar, tuple):
        text = " ".join([text] * action.nargs)
    kind = getattr(action.type, "__name__", None)
    if kind in ("int", "float") and action.nargs in (None, "?"):
        text += f" ({kind})"
    return f"`{text}`"


def _default(action: argparse.Action) -> str:
    if not action.option_strings:
        return "required"
    if action.required:
        return "required"
    if action.nargs == 0:
        return "off"
    d = action.default
    if d is None or d == [] or d == argparse.SUPPRESS:
        return "—"
    if isinstance(d, (list, tuple)):
        d = " ".join(str(v) for v in d)
    return f"`{d}`"


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    return parser._get_formatter()._expand_help(action)


def _exclusive(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Flag → note naming the flags it excludes (mutually exclusive groups)."""
    notes = {}
    for group in parser._mutually_exclusive_groups:
        names = [a.option_strings[-1] for a in group._group_actions if a.option_strings]
        for a in group._group_actions:
            others = [n for n in names if n not in a.option_strings]
            if others and a.option_strings:
                notes[a.option_strings[-1]] = "not with " + ", ".join(f"`{n}`" for n in others)
    return notes


def generate(cmd: str) -> str:
    """The generated block of one command: usage and the argument table (without the markers)."""
    p = _subparser(cmd)
    usage = " ".join(p.format_usage().split())
    usage = usage[len("usage: "):] if usage.startswith("usage: ") else usage
    rows = ["| argument | value | default | meaning |", "|---|---|---|---|"]
    notes = _exclusive(p)
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        meaning = _help(p, action)
        note = notes.get(action.option_strings[-1]) if action.option_strings else None
        if note:
            meaning = f"{meaning} ({note})" if meaning else note
        rows.append("| " + " | ".join(_cell(c) for c in (_flags(action), _value(action), _default(action),
                                                          meaning)) + " |")
    rows.append("| `-h`, `--help` | — | — | print this help and exit |")
    return "\n".join(["```", _wrap_usage(usage), "```", "", *rows])


def _wrap_usage(usage: str, width: int = 110) -> str:
    """The usage line wrapped at option boundaries (continuation lines indented by 4)."""
    words = re.findall(r"\[[^\[\]]*(?:\[[^\[\]]*\][^\[\]]*)*\]|\S+", usage)
    lines, line = [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = "    " + w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return "\n".join(lines)


def render(text: str, commands) -> str:
    """`text` with every command's generated block replaced (or a new section appended)."""
    for cmd in commands:
        begin, end = BEGIN.format(cmd=cmd), END.format(cmd=cmd)
        block = f"{begin}\n{generate(cmd)}\n{end}"
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m: block, text, count=1)
        else:
            text = text.rstrip("\n") + f"\n\n## halopaint {cmd}\n\n{block}\n"
    return text if text.endswith("\n") else text + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is out of date")
    mode.add_argument("--print", dest="show", action="store_true", help="print the blocks, write nothing")
    ap.add_argument("--file", type=Path, default=CLI_MD, help="the page to update (default docs/cli.md)")
    args = ap.parse_args(argv)
    from halopaint.cli import COMMANDS
    if args.show:
        for cmd in COMMANDS:
            print(f"## halopaint {cmd}\n\n{generate(cmd)}\n")
        return 0
    old = args.file.read_text() if args.file.exists() else "# Command-line reference\n"
    new = render(old, COMMANDS)
    if args.check:
        if new != old:
            stale = [c for c in COMMANDS if render(old, [c]) != old]
            print(f"{args.file} is out of date for: {', '.join(stale) or 'layout'}; "
                  "run python jobs/docs_cli.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        args.file.write_text(new)
        print(f"updated {args.file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
