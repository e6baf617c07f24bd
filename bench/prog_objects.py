"""Object-heavy Python workload for the "real program" benchmark: run as `python3 prog_objects.py [ROUNDS]` under
each allocator (LD_PRELOAD) and timed as a whole process by bench/run.py.

Deterministic: its own LCG instead of `random`, no set/dict iteration order in the output, and
the runner fixes PYTHONHASHSEED. It prints one line, `check=...`, which must be the same under
every allocator. Each round builds and drops a mix of what real programs keep on the heap:
instances with a __dict__, dicts keyed by strings, tuples, lists that grow, strings made by
formatting/joining/splitting, a linked tree, and a JSON round trip (large strings and lists).
"""
import json
import sys


class Node:
    def __init__(self, key, val):
        self.key = key
        self.val = val
        self.left = None
        self.right = None


class Record:
    def __init__(self, i, name, tags):
        self.id = i
        self.name = name
        self.tags = tags
        self.meta = {"len": len(name), "first": name[:3]}


def lcg(seed):
    # 64-bit LCG (Knuth MMIX constants); the high bits are the usable ones.
    while True:
        seed = (seed * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        yield seed >> 33


def tree_insert(root, key, val):
    # Iterative: deep random trees would hit the recursion limit.
    if root is None:
        return Node(key, val)
    n = root
    while True:
        if key < n.key:
            if n.left is None:
                n.left = Node(key, val)
                return root
            n = n.left
        else:
            if n.right is None:
                n.right = Node(key, val)
                return root
            n = n.right


def tree_sum(root):
    s, stack = 0, [root]
    while stack:
        n = stack.pop()
        if n is not None:
            s = (s + n.key * len(n.val)) & 0xFFFFFFFF
            stack.append(n.left)
            stack.append(n.right)
    return s


def one_round(rng, n):
    check = 0
    # Records with per-instance dicts, tag lists and formatted names.
    recs = []
    for i in range(n):
        r = next(rng)
        tags = [("t%d" % (r >> k & 31)) for k in range(r & 7)]
        recs.append(Record(i, "user-%08x-%d" % (r, i), tags))
    index = {rec.name: rec for rec in recs}
    by_tag = {}
    for rec in recs:
        for t in rec.tags:
            by_tag.setdefault(t, []).append(rec.id)
    check += sum(len(v) for v in by_tag.values()) + len(index)
    # Sort by a derived key (tuples), keep half, drop the rest: frees scattered objects.
    recs.sort(key=lambda rec: (rec.meta["first"], -rec.id))
    survivors = recs[::2]
    del recs, index
    # Strings: join/split/replace churn.
    text = " ".join(rec.name for rec in survivors)
    words = text.replace("-", " ").split()
    check += len(words) + sum(len(w) for w in words[:1000])
    # A random binary tree of small objects.
    root = None
    for i in range(n // 2):
        root = tree_insert(root, next(rng) & 0xFFFFF, "v%d" % i)
    check += tree_sum(root)
    # JSON round trip: large strings and many small containers at once.
    doc = [{"id": rec.id, "name": rec.name, "tags": rec.tags, "meta": rec.meta} for rec in survivors]
    blob = json.dumps(doc)
    back = json.loads(blob)
    check += len(blob) + sum(d["id"] for d in back)
    return check & 0xFFFFFFFF


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 40000
    rng = lcg(12345)
    check = 0
    for _ in range(rounds):
        check = (check * 31 + one_round(rng, n)) & 0xFFFFFFFF
    print("check=%d rounds=%d n=%d" % (check, rounds, n))


if __name__ == "__main__":
    main()
