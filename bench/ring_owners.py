#!/usr/bin/python3
"""Ring helpers for bench/locality-routing.sh.

  ring_owners.py check VECTORS.json
      check this lookup against the SDK's committed ring test vectors
      (xxh3-64 of known inputs, then shard, slot and pod of every key of every ring)
  ring_owners.py readdress IN.json OUT.json ADDR...
      copy a ring document, giving slot i (in the order of `slots`) the address ADDR[i];
      the assignment (`current`) is unchanged, so the owner slot of every key stays the same
  ring_owners.py nginx-map RING.json PREFIX N UPSTREAM-PREFIX
      print an nginx `map $http_x_locus_session $locus_owner { ... }` block naming, for each
      session id PREFIX-0 .. PREFIX-(N-1) (the load generator's ids), the upstream
      UPSTREAM-PREFIX<slot> of its owner under the ring
  ring_owners.py count RING.json PREFIX N
      print how many of those sessions each slot owns

The lookup is the ring document's own (docs/ring-format.md): shard = xxh3_64(key) >> (64 - log2 S),
slot = current[shard] (base64 of little-endian u16), owner = that slot's pod.
"""

import base64
import json
import struct
import sys

import xxhash


def table(encoded):
    raw = base64.b64decode(encoded)
    return list(struct.unpack("<%dH" % (len(raw) // 2), raw))


def shard_of(key, shards):
    bits = shards.bit_length() - 1
    if bits == 0:
        return 0
    return xxhash.xxh3_64_intdigest(key) >> (64 - bits)


def owner_slot(document, key):
    """The slot index that owns `key` (bytes) under `current`."""
    return table(document["current"])[shard_of(key, document["shards"])]


def slot_entry(document, index):
    for slot in document["slots"]:
        if slot["index"] == index:
            return slot
    raise SystemExit("ring has no slot %d" % index)


def check(path):
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)
    checked = 0
    for case in vectors["known_hashes"]:
        got = xxhash.xxh3_64_intdigest(bytes.fromhex(case["input_hex"]))
        if got != int(case["xxh3_64"], 16):
            raise SystemExit("xxh3-64 of %s: got %#x, want %s" % (case["input_hex"], got, case["xxh3_64"]))
        checked += 1
    for ring in vectors["rings"]:
        document = ring["document"]
        current = table(document["current"])
        for key in ring["keys"]:
            raw = bytes.fromhex(key["key_hex"])
            shard = shard_of(raw, document["shards"])
            slot = current[shard]
            pod = slot_entry(document, slot)["pod"]
            if (shard, slot, pod["name"], pod["address"]) != (key["shard"], key["slot"], key["pod"], key["address"]):
                raise SystemExit("ring %s key %s: got shard %d slot %d pod %s, want %d %d %s"
                                 % (document["service"], key["key_hex"], shard, slot, pod["name"],
                                    key["shard"], key["slot"], key["pod"]))
            checked += 1
    print("ring lookup agrees with %d SDK test vectors" % checked)


def readdress(source, target, addresses):
    with open(source, encoding="utf-8") as f:
        document = json.load(f)
    if len(addresses) != len(document["slots"]):
        raise SystemExit("%d addresses for %d slots" % (len(addresses), len(document["slots"])))
    for slot, address in zip(document["slots"], addresses):
        slot["pod"]["address"] = address
    with open(target, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def nginx_map(path, prefix, count, upstream_prefix):
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    lines = ["map $http_x_locus_session $locus_owner {",
             # No session header: nginx answers 400 itself (see the server block).
             "    default \"\";"]
    for i in range(count):
        key = "%s-%d" % (prefix, i)
        lines.append("    \"%s\" %s%d;" % (key, upstream_prefix, owner_slot(document, key.encode())))
    lines.append("}")
    print("\n".join(lines))


def count_owners(path, prefix, count):
    with open(path, encoding="utf-8") as f:
        document = json.load(f)
    counts = {}
    for i in range(count):
        slot = owner_slot(document, ("%s-%d" % (prefix, i)).encode())
        counts[slot] = counts.get(slot, 0) + 1
    print(" ".join("slot%d=%d" % (slot, n) for slot, n in sorted(counts.items())))


def main(argv):
    if len(argv) >= 2 and argv[1] == "check" and len(argv) == 3:
        check(argv[2])
    elif len(argv) >= 4 and argv[1] == "readdress":
        readdress(argv[2], argv[3], argv[4:])
    elif len(argv) == 6 and argv[1] == "nginx-map":
        nginx_map(argv[2], argv[3], int(argv[4]), argv[5])
    elif len(argv) == 5 and argv[1] == "count":
        count_owners(argv[2], argv[3], int(argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
