#!/usr/bin/env bash
# Benchmarks remixd end to end with the dry-run provider (no network): how long `--once` takes
# for a backlog of images and the peak memory (max RSS) it needs, for small and for large
# images. Memory must not grow with image size: uploads and copies are streamed.
#
#   tests/bench/run.sh [COUNT_SMALL] [COUNT_LARGE]
#
# Prints one line per scenario. Numbers vary with the machine; quote them with its size.
set -euo pipefail
cd "$(dirname "$0")/../.."
small=${1:-500}
large=${2:-20}
cargo build --release --quiet
bin=$PWD/target/release/remixd
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

make_inbox() { # dir count bytes
  python3 - "$1" "$2" "$3" <<'PY'
import os, struct, sys, zlib
root, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(root, exist_ok=True)
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
for i in range(count):
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1024, 768, 8, 2, 0, 0, 0))
    pad = max(0, size - len(head) - 24)
    body = chunk(b"tEXt", b"bench\x00" + os.urandom(pad)) + chunk(b"IEND", b"")
    sub = os.path.join(root, f"d{i % 10}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"img{i}.png"), "wb") as f:
        f.write(head + body)
    with open(os.path.join(sub, f"img{i}.txt"), "w") as f:
        f.write(f"benchmark image {i}")
PY
}

scenario() { # name count bytes num_images
  local dir=$work/$1
  make_inbox "$dir/inbox" "$2" "$3"
  cat >"$dir/config.yaml" <<YAML
inbox: inbox
outbox: outbox
quarantine: quarantine
api: {provider: dry-run}
defaults: {num_images: $4}
watch: {settle: 50ms, sidecar_wait: 0s}
limits: {concurrency: 8, inflight_images: 64, requests_per_minute: 100000, max_image_bytes: 20000000}
logging: {format: json, level: warn}
YAML
  local start end rss
  start=$(date +%s.%N)
  /usr/bin/time -f '%M' -o "$dir/rss" "$bin" run -c "$dir/config.yaml" --once >/dev/null
  end=$(date +%s.%N)
  rss=$(cat "$dir/rss")
  local done
  done=$(find "$dir/outbox" -name metadata.json | wc -l)
  python3 - "$1" "$2" "$3" "$4" "$start" "$end" "$rss" "$done" <<'PY'
import sys
name, count, size, n, start, end, rss, done = sys.argv[1:]
secs = float(end) - float(start)
print(f"{name}: {done}/{count} jobs of {int(size)/1048576:.2f} MiB x{n} outputs in {secs:.2f}s "
      f"({int(done)/secs:.1f} jobs/s), max RSS {int(rss)/1024:.1f} MiB")
PY
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
scenario small "$small" 65536 1
scenario large "$large" 9000000 2
