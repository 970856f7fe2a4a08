#!/usr/bin/env bash
# poser against MediaPipe BlazePose on the 1,000 LSPET val photos (im08001-im09000), whole photo,
# no boxes, in one run: wall time of each whole process (start included) and strict PCP.
# Needs: data/lspet (poser fetch-lsp --from ../shared/datasets/lspet) and a MediaPipe venv
# (python3 -m venv mpvenv && mpvenv/bin/pip install "mediapipe==0.10.14"), MPVENV=that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
MPVENV=${MPVENV:-../mpvenv}
OUT=runs/peer
mkdir -p "$OUT/photos"
for n in $(seq 8001 9000); do ln -f "data/lspet/images/im0$n.jpg" "$OUT/photos/" 2>/dev/null || cp "data/lspet/images/im0$n.jpg" "$OUT/photos/"; done
timed() { local t0; t0=$(date +%s.%N); "$@" > /dev/null 2>&1; echo "$(date +%s.%N) - $t0" | bc; }
for setting in "torch fp32" "openvino fp32" "auto auto" "auto int8"; do
  set -- $setting
  rm -rf "$OUT/annotate-$1-$2"
  s=$(timed .venv/bin/poser annotate "$OUT/photos" --runtime "$1" --precision "$2" --out "$OUT/annotate-$1-$2")
  .venv/bin/poser eval --data data/lspet --whole-image --runtime "$1" --precision "$2" --json "$OUT/eval-$1-$2.json" \
      --out "$OUT/eval" > /dev/null 2>&1
  python3 - "$OUT/eval-$1-$2.json" "$s" "poser --runtime $1 --precision $2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[3]:42s} {r['model']['runtime']:16s} {float(sys.argv[2]):6.1f} s  {1000 / float(sys.argv[2]):5.1f} images/s  "
      f"PCP {r['pcp']['mean']:.3f}  PDJ@0.2 {r['pdj']['at_0.2']:.3f}")
PY
done
s=$(timed "$MPVENV/bin/python" benchmarks/mediapipe_peer.py data/lspet/images --out "$OUT/mediapipe.json")
.venv/bin/poser eval --data data/lspet --predictions "$OUT/mediapipe.json" --json "$OUT/eval-mediapipe.json" --out "$OUT/eval" > /dev/null 2>&1
python3 - "$OUT/eval-mediapipe.json" "$s" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{'MediaPipe BlazePose full (0.10.14)':42s} {'-':16s} {float(sys.argv[2]):6.1f} s  {1000 / float(sys.argv[2]):5.1f} images/s  "
      f"PCP {r['pcp']['mean']:.3f}  PDJ@0.2 {r['pdj']['at_0.2']:.3f}")
PY
