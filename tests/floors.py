# Reads the table of parts and floors from docs/design.md (between the "floors" markers), for the include and symbol checks.

import os

START = "<!-- floors"
END = "<!-- /floors -->"


class Part:
    def __init__(self, name, floor, dirs, uses):
        self.name, self.floor, self.dirs, self.uses = name, floor, dirs, uses


def parse(text):
    """Returns {name: Part} from the markdown table between the markers;
    raises ValueError on a malformed table or a use that does not point down."""
    try:
        body = text[text.index(START):text.index(END)]
    except ValueError:
        raise ValueError("no floors table (markers '%s' ... '%s') in the design doc" % (START, END))
    parts = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].isdigit():
            continue  # the marker, the header and the separator rows
        floor, name, dirs, _owns, uses = cells
        parts[name] = Part(name, int(floor), dirs.split(), uses.split())
    if not parts:
        raise ValueError("the floors table has no rows")
    for p in parts.values():
        for u in p.uses:
            if u not in parts:
                raise ValueError("part %s uses unknown part %s" % (p.name, u))
            if parts[u].floor >= p.floor:
                raise ValueError("part %s (floor %d) uses %s (floor %d): not a lower floor"
                                 % (p.name, p.floor, u, parts[u].floor))
    return parts


def load(srcroot):
    with open(os.path.join(srcroot, "docs", "design.md"), encoding="utf-8") as fh:
        return parse(fh.read())


def part_of(parts, relpath):
    """The part owning a path relative to the source root, or None."""
    relpath = relpath.replace(os.sep, "/")
    best, best_len = None, -1
    for p in parts.values():
        for d in p.dirs:
            if (relpath == d or relpath.startswith(d.rstrip("/") + "/")) and len(d) > best_len:
                best, best_len = p, len(d)
    return best


def may_use(parts, user, used):
    """True when part `user` may include and call part `used`."""
    return user == used or used in parts[user].uses


def table(parts, edges):
    """Markdown rows: part -> the parts it uses in `edges` ({part: set})."""
    rows = ["| part (floor) | uses |", "|---|---|"]
    for p in sorted(parts.values(), key=lambda p: (-p.floor, p.name)):
        used = sorted(edges.get(p.name, ()), key=lambda u: (-parts[u].floor, u))
        rows.append("| %s (%d) | %s |" % (p.name, p.floor, ", ".join(used) or "-"))
    return "\n".join(rows)



def report_self_test(label, errors):
    """Prints a self-test's findings and returns its exit code."""
    for e in errors:
        print(e)
    print(label + ":", "FAILED" if errors else "ok")
    return 1 if errors else 0
