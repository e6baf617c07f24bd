# A dict/list/str-heavy Python workload with deterministic output, run with and without LD_PRELOAD=libhakmem.so.

import hashlib
import json


def words(n, seed):
    x = seed
    out = []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append("w%x" % (x >> 40) * (1 + (x >> 20) % 5))
    return out


def main():
    h = hashlib.sha256()
    # Dicts that grow, shrink and get rebuilt exercise many block sizes.
    counts = {}
    for w in words(200000, 1):
        counts[w] = counts.get(w, 0) + 1
    for k in list(counts)[::3]:
        del counts[k]
    h.update(repr(sorted(counts.items())[:1000]).encode())
    print("distinct words", len(counts))

    # Lists of lists and big string joins (realloc-style growth).
    table = [[i * j % 97 for j in range(i % 50)] for i in range(20000)]
    text = "\n".join(",".join(map(str, row)) for row in table)
    h.update(text.encode())
    print("text length", len(text))

    # str churn: split/replace/format produce many short-lived objects.
    s = text.replace(",", ";").upper()
    parts = s.split(";")
    print("parts", len(parts), "sum", sum(len(p) for p in parts))

    # JSON round trip of nested structures.
    doc = {"k%d" % i: {"v": list(range(i % 30)), "s": "x" * (i % 300)} for i in range(5000)}
    blob = json.dumps(doc, sort_keys=True)
    back = json.loads(blob)
    assert back == doc
    h.update(blob.encode())
    print("json bytes", len(blob))

    # A set and a large bytearray that grows by appends.
    seen = set()
    buf = bytearray()
    for i in range(100000):
        seen.add((i * 7919) % 65537)
        buf += (i % 251).to_bytes(1, "little") * (i % 7)
    h.update(bytes(buf))
    print("set", len(seen), "bytearray", len(buf))
    print("sha256", h.hexdigest())


if __name__ == "__main__":
    main()
