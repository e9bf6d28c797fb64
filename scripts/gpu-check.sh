#!/usr/bin/env bash
# scripts/gpu-check.sh: the one script that proves every perturb kernel on a lent NVIDIA GPU.
#
#   scripts/gpu-check.sh --build     here: build the kit in .gpu-kit/ (git-ignored, carried to the device)
#   scripts/gpu-check.sh --device    there: run every check from the kit, write results under $OUT
#   scripts/gpu-check.sh --dry-run   here: --build, then the device step's logic against the kit on
#                                    this machine (no GPU), then check the kit is complete; non-zero
#                                    exit if the kit is incomplete or a step failed
#
# The device has no Rust toolchain and no network, so the kit holds everything the checks run:
#   bin.tar.gz        stripped release executables: `perturb` and the test executables of
#                     tests/parity_cuda.rs, tests/parity_wgpu.rs, crates/perturb-cuda (lib,
#                     device_ops, nvrtc_compile) and crates/perturb-wgpu (lib and every tests/*.rs),
#                     named <package>.<target>; the kernels are include_str!'d into them
#   manifest.sha256   sha256 of each executable, checked after unpacking
#   debs/*.deb        the Vulkan loader and GL vendor libraries (libvulkan1, libglvnd0, ...) for wgpu
#                     on the NVIDIA driver (the device README's recipe)
#   kit.txt           commit, toolchain, sizes
#
# The device call (see crates/perturb-cuda/README.md, "On a GPU"):
#   run(command: "bash scripts/gpu-check.sh --device", carry: [".gpu-kit"], timeout_s: 540)
# It runs every step with its own `timeout`, carries on after a failure, keeps the whole run inside
# GPU_CHECK_BUDGET seconds (default 470; later steps are cut or skipped when it runs out, and say so)
# and writes at most 8 files under $OUT: summary.txt, summary.json, logs.tar.gz (every step's log
# and the demos' outputs), bench-cuda.json, bench-wgpu.json, demo-cuda.json, demo-wgpu.json.
#
# Options: --kit DIR (default .gpu-kit), --out DIR (default $OUT, else a new temp dir),
#          --only PATTERNS / --skip PATTERNS (comma-separated globs over step names, e.g.
#          --only 'bench-*,demo-cuda' for a rerun; unpack, vulkan, env and devices always run).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KIT="$ROOT/.gpu-kit"
MODE=""
OUT_DIR="${OUT:-}"
ONLY=""
SKIP=""
BUDGET="${GPU_CHECK_BUDGET:-470}"
LIMIT_BYTES=$((64 * 1024 * 1024))
# The kit's Vulkan/GL packages: the device README's list (libglvnd0 holds libGLdispatch, which
# the NVIDIA Vulkan ICD links).
DEBS=(libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)

usage() { sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --build | --device | --dry-run) MODE="${1#--}" ;;
    --kit) KIT=$(realpath -m "$2"); shift ;;
    --out) OUT_DIR="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --skip) SKIP="$2"; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[ -n "$MODE" ] || { usage >&2; exit 2; }

say() { echo "gpu-check: $*"; }
now() { date +%s; }

# ---------------------------------------------------------------------------------------------
# The kit (runs here)
# ---------------------------------------------------------------------------------------------

# Bytes of what travels to the device besides carried paths: tracked files and untracked ones
# git does not ignore.
tree_bytes() {
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard 2>/dev/null | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
}

build_kit() {
  local t0 art stage n
  t0=$(now)
  command -v cargo >/dev/null || { say "cargo not found: --build runs where the Rust toolchain is"; return 1; }
  mkdir -p "$KIT/debs"
  art="$ROOT/target/gpu-kit-artifacts.json"
  say "building: cargo test --workspace --release --no-run (the same build as CI's test command)"
  # --workspace keeps the feature set of `cargo test --workspace --release`, so CI's build is reused.
  if ! (cd "$ROOT" && cargo test --workspace --release --no-run --message-format=json >"$art"); then
    say "cargo build failed"
    return 1
  fi
  stage=$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-stage.XXXXXX")
  # Pick the executables from cargo's messages: the release `perturb` binary, the root parity
  # suites and every test executable of perturb-cuda and perturb-wgpu except kernel_emu (a CPU
  # emulator that compiles the sources with the host C++ compiler: nothing for a GPU to prove).
  if ! python3 - "$art" "$stage" "$ROOT" <<'PY'; then
import json, os, subprocess, sys
art, stage, root = sys.argv[1], sys.argv[2], os.path.realpath(sys.argv[3])
picked = {}
for line in open(art):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    crate_dir = os.path.realpath(os.path.dirname(m["manifest_path"]))
    pkg = "perturb" if crate_dir == root else os.path.basename(crate_dir)
    t, test = m["target"], m["profile"]["test"]
    name = None
    if pkg == "perturb" and t["kind"] == ["bin"] and t["name"] == "perturb" and not test:
        name = "perturb"
    elif pkg == "perturb" and test and t["name"] in ("parity_cuda", "parity_wgpu"):
        name = "perturb." + t["name"]
    elif pkg in ("perturb-cuda", "perturb-wgpu") and test and t["name"] != "kernel_emu":
        name = pkg + "." + ("lib" if "lib" in t["kind"] else t["name"])
    if name:
        picked[name] = m["executable"]
for name, exe in sorted(picked.items()):
    subprocess.run(["strip", "-o", os.path.join(stage, name), exe], check=True)
    print(f"  {name:32s} <- {os.path.relpath(exe)}")
PY
    say "picking or stripping the executables failed"
    rm -rf "$stage"
    return 1
  fi
  (cd "$stage" && sha256sum -- * >"$KIT/manifest.sha256")
  n=$(wc -l <"$KIT/manifest.sha256")
  tar -czf "$KIT/bin.tar.gz.tmp" -C "$stage" . && mv "$KIT/bin.tar.gz.tmp" "$KIT/bin.tar.gz"
  say "$n executables, $(du -cb "$stage"/* | tail -1 | cut -f1) bytes stripped, $(stat -c %s "$KIT/bin.tar.gz") in bin.tar.gz"
  rm -rf "$stage"

  # The Vulkan loader for amd64, as .deb files, from this machine's Debian repositories (the
  # device README's recipe; the lists go to a private temp dir, not /var/lib/apt).
  local missing=() p apt
  for p in "${DEBS[@]}"; do
    compgen -G "$KIT/debs/${p}_*_amd64.deb" >/dev/null || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt=$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-apt.XXXXXX")
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial"
    local o=(-qq -oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$apt/lists" "-oDir::Cache=$apt/cache")
    [ "$(id -u)" = 0 ] && o+=(-oAPT::Sandbox::User=root) # root downloading into a root-owned dir
    say "downloading ${missing[*]}"
    if apt-get "${o[@]}" update && (cd "$KIT/debs" && apt-get "${o[@]}" download "${missing[@]}"); then
      :
    else
      say "apt-get download failed (no network?)"
    fi
    rm -rf "$apt"
  fi
  ls "$KIT/debs"
  {
    echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -m) $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"')"
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' +uncommitted changes')"
    echo "rustc: $(rustc --version 2>/dev/null)"
    echo "executables: $n (stripped, in bin.tar.gz)"
    echo "debs: $(cd "$KIT/debs" && echo *.deb)"
  } >"$KIT/kit.txt"
  say "kit built in $(($(now) - t0)) s"
  check_kit
}

# The kit is complete when every file the device step needs is there and intact, and the kit
# plus the working tree fit the device's 64 MiB.
check_kit() {
  local ok=1 f need kit_b tree_b
  for f in bin.tar.gz manifest.sha256 kit.txt; do
    [ -s "$KIT/$f" ] || { say "kit incomplete: $KIT/$f missing"; ok=0; }
  done
  for need in perturb perturb.parity_cuda perturb.parity_wgpu perturb-cuda.lib perturb-cuda.device_ops \
    perturb-cuda.nvrtc_compile perturb-wgpu.lib; do
    grep -q "  $need\$" "$KIT/manifest.sha256" 2>/dev/null || { say "kit incomplete: no $need in manifest.sha256"; ok=0; }
  done
  if [ -s "$KIT/bin.tar.gz" ] && [ -s "$KIT/manifest.sha256" ]; then
    local listed
    listed=$(tar -tzf "$KIT/bin.tar.gz" 2>/dev/null | sed 's|^\./||' | grep -v '^$' | sort)
    [ "$listed" = "$(awk '{print $2}' "$KIT/manifest.sha256" | sort)" ] ||
      { say "kit incomplete: bin.tar.gz does not hold exactly the manifest's files"; ok=0; }
  fi
  for f in "${DEBS[@]}"; do
    compgen -G "$KIT/debs/${f}_*_amd64.deb" >/dev/null || { say "kit incomplete: no debs/${f}_*_amd64.deb"; ok=0; }
  done
  kit_b=$(du -sb "$KIT" | cut -f1)
  tree_b=$(tree_bytes)
  tree_b=${tree_b:-0}
  say "size: kit $kit_b bytes ($((kit_b / 1048576)) MiB) + working tree $tree_b bytes = $((kit_b + tree_b)) of $LIMIT_BYTES"
  if [ $((kit_b + tree_b)) -gt "$LIMIT_BYTES" ]; then
    say "kit incomplete: kit + working tree exceed the device's 64 MiB"
    ok=0
  fi
  [ "$ok" = 1 ] && say "kit complete: $KIT"
  [ "$ok" = 1 ]
}

# ---------------------------------------------------------------------------------------------
# The checks (the device step; --dry-run runs the same logic here)
# ---------------------------------------------------------------------------------------------

DRY=0
WORK=""
BIN=""
LOGS=""
DEADLINE=0
RESERVE=20 # seconds kept for packing the results
STEPS_TSV=""
EXIT_FAIL=0

# "pattern1,pattern2" matches NAME?
matches_any() {
  local name=$1 list=$2 p
  local IFS=,
  for p in $list; do
    # shellcheck disable=SC2053 # the pattern is meant as a glob
    [[ $name == $p ]] && return 0
  done
  return 1
}

selected() {
  local name=$1
  case "$name" in unpack | vulkan | env | devices*) return 0 ;; esac
  if [ -n "$ONLY" ] && ! matches_any "$name" "$ONLY"; then return 1; fi
  if [ -n "$SKIP" ] && matches_any "$name" "$SKIP"; then return 1; fi
  return 0
}

# One line per step into steps.tsv: name status rc seconds timeout passed failed ignored skipped note
record() {
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$STEPS_TSV"
  case "$2" in fail | timeout) EXIT_FAIL=1 ;; esac
  printf 'gpu-check: %-26s %-7s %5ss  %s\n' "$1" "$2" "$4" "${10}"
}

skip_step() { record "$1" skip - 0 - 0 0 0 0 "$2"; }

# run_step NAME CAP_SECONDS COMMAND...: runs COMMAND with `timeout`, its output into
# $LOGS/NAME.log, and records pass/fail/timeout with the test counts the log shows.
# STEP_NOTE (set by the caller) is appended to the note; STEP_RC holds the exit status after.
STEP_NOTE=""
STEP_RC=0
run_step() {
  local name=$1 cap=$2
  shift 2
  local log="$LOGS/$name.log" left t t0 secs status note passed failed ignored skipped
  STEP_RC=0
  if ! selected "$name"; then STEP_NOTE=""; return 0; fi
  left=$((DEADLINE - $(now) - RESERVE))
  if [ "$left" -lt 5 ]; then
    skip_step "$name" "out of budget (GPU_CHECK_BUDGET=$BUDGET s); rerun with --only $name"
    STEP_NOTE=""
    STEP_RC=125
    return 0
  fi
  t=$((cap < left ? cap : left))
  note="$STEP_NOTE"
  [ "$t" -lt "$cap" ] && note="${note:+$note; }timeout cut to $t s by the budget"
  {
    echo "# step $name: $*"
    echo "# timeout $t s, started $(date -u '+%H:%M:%S UTC')"
  } >"$log"
  t0=$(date +%s.%N)
  timeout -k 10 "$t" "$@" >>"$log" 2>&1
  STEP_RC=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  echo "# exit $STEP_RC after $secs s" >>"$log"
  read -r passed failed ignored < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) {
      if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
      END { print p + 0, f + 0, g + 0 }' "$log")
  skipped=$(grep -c '^skipped:' "$log")
  case "$STEP_RC" in
    0) status=pass ;;
    124 | 137) status=timeout ;;
    *) status=fail ;;
  esac
  if [ "$status" = pass ] && [ "$passed" -gt 0 ] && [ "$skipped" -ge "$passed" ]; then
    status=skip
    note="${note:+$note; }every test printed skipped: $(grep -m1 '^skipped:' "$log" | cut -c10-90)"
  fi
  # In a dry run a CUDA command that says CUDA is unavailable is the expected outcome here.
  if [ "$DRY" = 1 ] && [ "$status" = fail ] && grep -q 'cuda unavailable' "$log"; then
    status=skip
    note="${note:+$note; }no CUDA device here (expected in a dry run): $(grep -m1 -o 'cuda unavailable.*' "$log" | cut -c1-80)"
  fi
  if [ "$status" != pass ] && [ "$status" != skip ]; then
    local ft
    ft=$(grep -E '^test .* FAILED$' "$log" | awk '{print $2}' | head -5 | paste -sd' ')
    [ -n "$ft" ] && note="${note:+$note; }failed: $ft"
  fi
  record "$name" "$status" "$STEP_RC" "$secs" "$t" "$passed" "$failed" "$ignored" "$skipped" "$note"
  STEP_NOTE=""
  return 0
}

# The first existing directory holding $1 (a library file name): `python3`'s site-packages
# first (the pip CUDA wheels PyTorch itself loads, so both agree on one copy), then the toolkit.
lib_dir_for() {
  local lib=$1 d site
  site=$(python3 -c 'import site; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
  for d in $site; do
    for f in "$d"/nvidia/*/lib/"$lib"; do
      [ -e "$f" ] && { dirname "$f"; return 0; }
    done
  done
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/$lib" ] && { echo "$d"; return 0; }
  done
  return 1
}

in_ldcache() { ldconfig -p 2>/dev/null | grep -qF "	$1 ("; }

find_sanitizer() {
  local c
  c=$(command -v compute-sanitizer 2>/dev/null) && { echo "$c"; return 0; }
  for c in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer /opt/nvidia/*/compute-sanitizer; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

# Does the wgpu section of `perturb devices` (saved in $1) name an adapter matching $2?
wgpu_has() { sed -n '/^wgpu:/,/^cuda:/p' "$1" | grep -qi -- "$2"; }

# add_note STEP TEXT: appends TEXT to the recorded step's note.
add_note() {
  [ -n "$2" ] || return 0
  awk -F'\t' -v OFS='\t' -v s="$1" -v t="$2" '$1 == s { $10 = ($10 == "" ? t : $10 "; " t) } { print }' \
    "$STEPS_TSV" >"$STEPS_TSV.tmp" && mv "$STEPS_TSV.tmp" "$STEPS_TSV"
}

# "cuda: available (NAME); wgpu: NAME, ..." from a `perturb devices` log.
devices_note() {
  local cuda wgpu
  cuda=$(grep -m1 '^cuda:' "$1" | cut -c1-60)
  [ "${cuda#cuda: available}" != "$cuda" ] && cuda="cuda: $(sed -n '/^cuda:/,$p' "$1" | grep -m1 '^  - ' | cut -c5-60)"
  wgpu=$(sed -n '/^wgpu:/,/^cuda:/p' "$1" | grep '^  - ' | sed 's/^  - //; s/ (.*//' | paste -sd',')
  echo "$cuda; wgpu: ${wgpu:-none}"
}

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/ /g' | tr -d '\000-\037')"; }

write_summary() {
  local out=$1 totals
  totals=$(awk -F'\t' '{ n[$2]++ } END { printf "pass %d, fail %d, timeout %d, skip %d", n["pass"], n["fail"], n["timeout"], n["skip"] }' "$STEPS_TSV")
  {
    echo "perturb gpu-check ($MODE) $(date -u '+%Y-%m-%d %H:%M UTC'), $(($(now) - START)) s of a $BUDGET s budget"
    echo "device: $(cat "$WORK/device.txt" 2>/dev/null)"
    echo "kit: $(tr '\n' ';' <"$KIT/kit.txt")"
    echo "steps: $totals"
    echo
    printf '%-26s %-7s %4s %7s %7s %6s %6s %7s %7s  %s\n' step status rc seconds timeout passed failed ignored skipped note
    awk -F'\t' '{ printf "%-26s %-7s %4s %7s %7s %6s %6s %7s %7s  %s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$STEPS_TSV"
  } >"$out/summary.txt"
  {
    printf '{\n  "mode": %s,\n  "date": %s,\n  "seconds": %s,\n  "budget_s": %s,\n' \
      "$(json_str "$MODE")" "$(json_str "$(date -u '+%Y-%m-%d %H:%M UTC')")" "$(($(now) - START))" "$BUDGET"
    printf '  "device": %s,\n  "kit": %s,\n' "$(json_str "$(cat "$WORK/device.txt" 2>/dev/null)")" "$(json_str "$(tr '\n' ';' <"$KIT/kit.txt")")"
    printf '  "totals": {%s},\n  "steps": [\n' "$(awk -F'\t' '{ n[$2]++ } END { printf "\"pass\": %d, \"fail\": %d, \"timeout\": %d, \"skip\": %d", n["pass"], n["fail"], n["timeout"], n["skip"] }' "$STEPS_TSV")"
    local first=1 name status rc secs to p f g s note
    while IFS=$'\t' read -r name status rc secs to p f g s note; do
      [ "$first" = 1 ] || printf ',\n'
      first=0
      [[ $rc =~ ^[0-9]+$ ]] || rc=null # "-": the step did not run
      [[ $to =~ ^[0-9]+$ ]] || to=null
      printf '    {"step": %s, "status": %s, "rc": %s, "seconds": %s, "timeout_s": %s, "passed": %s, "failed": %s, "ignored": %s, "skipped": %s, "note": %s}' \
        "$(json_str "$name")" "$(json_str "$status")" "$rc" "$secs" "$to" "$p" "$f" "$g" "$s" "$(json_str "$note")"
    done <"$STEPS_TSV"
    printf '\n  ]\n}\n'
  } >"$out/summary.json"
}

run_checks() {
  local out=$1
  START=$(now)
  DEADLINE=$((START + BUDGET))
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
  BIN="$WORK/bin"
  LOGS="$WORK/logs"
  STEPS_TSV="$WORK/steps.tsv"
  mkdir -p "$BIN" "$LOGS" "$out" "$WORK/xdg"
  chmod 700 "$WORK/xdg"
  : >"$STEPS_TSV"
  export XDG_RUNTIME_DIR="$WORK/xdg" # Mesa's stderr noise
  export RUST_BACKTRACE=1
  # Nothing inherited decides a skip or an adapter: each step sets what it needs.
  unset PERTURB_REQUIRE_CUDA PERTURB_REQUIRE_WGPU PERTURB_REQUIRE_NVRTC PERTURB_WGPU_ADAPTER PERTURB_WGPU_VARIANT
  say "mode $MODE, kit $KIT, results in $out, work dir $WORK, budget $BUDGET s"

  # 1. unpack: the executables, checked against the manifest.
  STEP_NOTE="$(wc -l <"$KIT/manifest.sha256") executables against manifest.sha256"
  # shellcheck disable=SC2016 # expanded by the inner bash
  run_step unpack 60 bash -c 'set -e; tar -xzf "$1/bin.tar.gz" -C "$2"; cd "$2"; sha256sum --strict -c "$1/manifest.sha256"' _ "$KIT" "$BIN"
  if [ "$STEP_RC" != 0 ]; then
    say "the kit does not unpack: nothing else can run"
    finish "$out"
    return
  fi

  # 2. vulkan: unpack each .deb whose libraries the loader cache lacks (dpkg -x + ldconfig,
  #    the device README's recipe). A dry run unpacks into the work dir, never into /.
  local root=/
  if [ "$DRY" = 1 ]; then
    root="$WORK/vkroot"
  elif ! [ -e /dev/nvidiactl ] && ! command -v nvidia-smi >/dev/null; then
    root="$WORK/vkroot" # no NVIDIA driver: this is not the device, leave its / alone
    STEP_NOTE="no NVIDIA driver here, so not into /"
  fi
  mkdir -p "$root"
  # shellcheck disable=SC2016 # expanded by the inner bash
  run_step vulkan 60 bash -c '
    root=$1; shift
    for deb in "$@"; do
      # The sonames the package ships (its symlinks, e.g. libvulkan.so.1), from the path column.
      libs=$(dpkg-deb -c "$deb" | awk "{print \$6}" | grep -E "\.so\.[0-9]+$" | xargs -r -n1 basename | paste -sd" ")
      need=""
      for l in $libs; do ldconfig -p | grep -qF "	$l (" || need="$need $l"; done
      if [ "$root" = / ] && [ -n "$libs" ] && [ -z "$need" ]; then echo "$(basename "$deb"): present ($libs)"; continue; fi
      echo "$(basename "$deb"): unpacking into $root (missing:${need:- none})"
      dpkg -x "$deb" "$root" || exit 1
    done
    if [ "$root" != / ]; then
      ls "$root"/usr/lib/x86_64-linux-gnu/libvulkan.so.1 || exit 1
    else
      ldconfig && ldconfig -p | grep -F "libvulkan.so.1 (" || { echo "libvulkan.so.1 not in the loader cache"; exit 1; }
    fi' _ "$root" "$KIT"/debs/*.deb
  add_note vulkan "$(grep -c '^lib.*\.deb: unpacking' "$LOGS/vulkan.log") of $(find "$KIT/debs" -name '*.deb' | wc -l) packages unpacked into $root"

  # 3. env: the CUDA libraries cudarc dlopens (libcuda, libnvrtc, libcublas), nvidia-smi, PyTorch.
  local d lib libpath=""
  for lib in libnvrtc.so.13 libcublas.so.13; do
    if d=$(lib_dir_for "$lib"); then
      case ":$libpath:" in *":$d:"*) ;; *) libpath="${libpath:+$libpath:}$d" ;; esac
    fi
  done
  if ! in_ldcache libcuda.so.1 && [ -e /usr/local/nvidia/lib64/libcuda.so.1 ]; then
    libpath="${libpath:+$libpath:}/usr/local/nvidia/lib64"
  fi
  export LD_LIBRARY_PATH="${libpath}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # shellcheck disable=SC2016 # expanded by the inner bash
  run_step env 90 bash -c '
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    for l in libcuda.so.1 libnvrtc.so.13 libcublas.so.13 libvulkan.so.1; do
      f=""; for d in ${LD_LIBRARY_PATH//:/ }; do [ -e "$d/$l" ] && { f="$d/$l"; break; }; done
      [ -n "$f" ] || f=$(ldconfig -p | grep -F "	$l (" | head -1 | sed "s/.*=> //")
      echo "$l: ${f:-not found}"
    done
    ls /usr/local/nvidia/share/vulkan/icd.d/ /usr/share/vulkan/icd.d/ /etc/vulkan/icd.d/ 2>/dev/null
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi -L
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv
    else echo "nvidia-smi: not here"; fi
    command -v nvcc >/dev/null && nvcc --version | tail -2
    PYTHONUNBUFFERED=1 timeout 60 python3 -c "import torch; print(\"torch\", torch.__version__, \"cuda\", torch.cuda.is_available(), \"cudnn\", torch.backends.cudnn.version())" 2>&1 | tail -2 || true
    nproc; uname -r' _
  grep -E '^(GPU |libcuda|torch)' "$LOGS/env.log" | head -3 | paste -sd';' >"$WORK/device.txt"
  add_note env "$(grep -E '^lib[a-z]+\.so\.[0-9]+: ' "$LOGS/env.log" | sed 's/: .*not found/: missing/; s/: \/.*/: ok/' | paste -sd' ')"

  # 4. devices: every backend; if wgpu sees no NVIDIA adapter, point the loader at the NVIDIA
  #    ICD directly (VK_DRIVER_FILES, the README's fallback) and look again.
  local want=nvidia
  [ "$DRY" = 1 ] && want=llvmpipe
  run_step devices 60 "$BIN/perturb" devices
  add_note devices "$(devices_note "$LOGS/devices.log")"
  if ! wgpu_has "$LOGS/devices.log" "$want"; then
    local icd="" c
    if [ "$DRY" = 0 ]; then
      for c in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json \
        /etc/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/share/vulkan/icd.d/*.json; do
        [ -e "$c" ] && { icd=$c; break; }
      done
    fi
    if [ -n "$icd" ]; then
      export VK_DRIVER_FILES="$icd"
      [ -e /usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json ] &&
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
      STEP_NOTE="VK_DRIVER_FILES=$icd"
      run_step devices-vk-driver-files 60 "$BIN/perturb" devices
      add_note devices-vk-driver-files "$(devices_note "$LOGS/devices-vk-driver-files.log")"
      wgpu_has "$LOGS/devices-vk-driver-files.log" "$want" || say "wgpu still sees no $want adapter"
    else
      say "wgpu sees no $want adapter and no NVIDIA ICD file was found (the wgpu steps will say why)"
    fi
  fi

  # 5. the CUDA suites: the root parity suite (promoted kernels and every v1) and perturb-cuda's
  #    tests. On the device PERTURB_REQUIRE_CUDA=1 makes a skip a failure; a dry run has no device.
  local cuda_env=(PERTURB_REQUIRE_NVRTC=1 PERTURB_EXPECT_NVRTC_MAJOR=13)
  [ "$DRY" = 0 ] && cuda_env+=(PERTURB_REQUIRE_CUDA=1)
  if [ "$DRY" = 1 ] && ! lib_dir_for libnvrtc.so.13 >/dev/null && ! in_ldcache libnvrtc.so.13; then
    cuda_env=() # no NVRTC here: the compile test skips with its own line
  fi
  local exe name
  for exe in perturb.parity_cuda perturb-cuda.lib perturb-cuda.device_ops perturb-cuda.nvrtc_compile; do
    name="cuda-${exe#*.}"
    [ "$name" = cuda-parity_cuda ] && name="cuda-parity"
    run_step "$name" 120 env "${cuda_env[@]}" "$BIN/$exe" --show-output
  done
  [ "$DRY" = 1 ] && selected cuda-kernel_emu &&
    skip_step cuda-kernel_emu "not in the kit: the CPU emulator of the kernels runs in CI (cargo test), not on a GPU"

  # 6. the wgpu suites on the NVIDIA Vulkan adapter (lavapipe in a dry run), chosen by name with
  #    PERTURB_REQUIRE_WGPU=1 so a missing adapter fails instead of skipping or falling back.
  local wgpu_env=(PERTURB_REQUIRE_WGPU=1 "PERTURB_WGPU_ADAPTER=$want")
  for exe in perturb.parity_wgpu $(awk '{print $2}' "$KIT/manifest.sha256" | grep '^perturb-wgpu\.' | sort); do
    name="wgpu-${exe#*.}"
    [ "$name" = wgpu-parity_wgpu ] && name="wgpu-parity"
    run_step "$name" 60 env "${wgpu_env[@]}" "$BIN/$exe" --show-output
  done

  # 7. the benchmark suite and the demo (--quick) on CUDA. The bench JSON goes straight into
  #    $OUT; demo.json comes back, the figures go into logs.tar.gz. A dry run runs the real
  #    commands, which must stop with "cuda unavailable" here.
  run_step bench-cuda 200 "$BIN/perturb" bench --suite standard --backend cuda --out "$out/bench-cuda.json"
  local demo_small=()
  [ "$DRY" = 1 ] && demo_small=(--train-examples 64 --eval-examples 16 --epochs 1)
  run_step demo-cuda 120 "$BIN/perturb" demo --backend cuda --quick --out "$WORK/demo-cuda"

  # 8. the same on wgpu. A dry run benches one small product on lavapipe instead of the suite
  #    (the standard suite on lavapipe takes far longer than CI can spend) and shrinks the demo.
  if [ "$DRY" = 0 ]; then
    run_step bench-wgpu 170 env "PERTURB_WGPU_ADAPTER=$want" "$BIN/perturb" bench --suite standard --backend wgpu \
      --out "$out/bench-wgpu.json"
  else
    STEP_NOTE="dry run: --op linear --shapes 36x68x20 on lavapipe instead of --suite standard"
    run_step bench-wgpu 120 env "PERTURB_WGPU_ADAPTER=$want" "$BIN/perturb" bench --op linear --shapes 36x68x20 \
      --reps 2 --warmup 1 --backend wgpu --out "$out/bench-wgpu.json"
  fi

  [ "$DRY" = 1 ] && STEP_NOTE="dry run: --quick shrunk to 64 training / 16 held-out digits, 1 epoch"
  run_step demo-wgpu 120 env "PERTURB_WGPU_ADAPTER=$want" "$BIN/perturb" demo --backend wgpu --quick \
    "${demo_small[@]}" --out "$WORK/demo-wgpu"
  for d in demo-cuda demo-wgpu; do
    [ -s "$WORK/$d/demo.json" ] && cp "$WORK/$d/demo.json" "$out/$d.json"
  done

  # 9. compute-sanitizer memcheck and racecheck over the parity suite (every launch of every
  #    kernel variant on small awkward shapes) and the TF32 GEMM test (v3), if the image has it.
  local san
  if san=$(find_sanitizer); then
    local tool
    for tool in memcheck racecheck; do
      run_step "$tool-parity" 75 env "${cuda_env[@]}" "$san" --tool "$tool" --error-exitcode 86 --print-limit 20 \
        "$BIN/perturb.parity_cuda" --test-threads 4
      run_step "$tool-tf32" 30 env "${cuda_env[@]}" "$san" --tool "$tool" --error-exitcode 86 --print-limit 20 \
        "$BIN/perturb-cuda.device_ops" tf32
    done
  else
    local s
    for s in memcheck-parity memcheck-tf32 racecheck-parity racecheck-tf32; do
      selected "$s" && skip_step "$s" "compute-sanitizer not found (PATH, /usr/local/cuda*/bin)"
    done
  fi

  finish "$out"
}

finish() {
  local out=$1
  write_summary "$out"
  cp "$out/summary.txt" "$LOGS/summary.txt"
  local packed=(logs) d
  for d in demo-cuda demo-wgpu; do [ -d "$WORK/$d" ] && packed+=("$d"); done
  tar -czf "$out/logs.tar.gz" -C "$WORK" "${packed[@]}"
  # The ends of the first failing steps' logs, then the summary (cut to fit the device reply's
  # 12,000-character output tail; the full text is in summary.txt and logs.tar.gz).
  local name status shown=0
  while IFS=$'\t' read -r name status _; do
    case "$status" in
      fail | timeout)
        shown=$((shown + 1))
        [ "$shown" -le 5 ] || continue
        echo
        echo "---- $name ($status): last lines of its log ----"
        grep -v '^$' "$LOGS/$name.log" | tail -8 | cut -c1-160
        ;;
    esac
  done <"$STEPS_TSV"
  [ "$shown" -gt 5 ] && echo "---- ($((shown - 5)) more failing steps: see summary.txt and logs.tar.gz)"
  echo
  cut -c1-150 "$out/summary.txt"
  say "results: $(find "$out" -maxdepth 1 -type f -printf '%f\n' | sort | paste -sd' ') in $out"
  # The work dir holds the unpacked executables (about 80 MB): gone unless GPU_CHECK_KEEP=1.
  if [ "${GPU_CHECK_KEEP:-0}" = 1 ]; then say "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}

case "$MODE" in
  build)
    build_kit
    exit $?
    ;;
  device)
    [ -n "$OUT_DIR" ] || OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-out.XXXXXX")
    check_kit || say "the kit looks incomplete; running what it has"
    run_checks "$OUT_DIR"
    exit "$EXIT_FAIL"
    ;;
  dry-run)
    DRY=1
    build_kit || { say "dry run: the kit did not build"; exit 1; }
    [ -n "$OUT_DIR" ] || OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-dry.XXXXXX")
    run_checks "$OUT_DIR"
    kit_ok=0
    check_kit && kit_ok=1
    n_out=$(find "$OUT_DIR" -type f | wc -l)
    if [ "$n_out" -gt 8 ]; then
      say "dry run: $n_out files under \$OUT, the device returns at most 8"
      kit_ok=0
    fi
    if [ "$kit_ok" = 1 ] && [ "$EXIT_FAIL" = 0 ]; then
      say "dry run passed: kit complete, no step failed"
      exit 0
    fi
    say "dry run FAILED (kit complete: $kit_ok, a step failed: $EXIT_FAIL)"
    exit 1
    ;;
esac
