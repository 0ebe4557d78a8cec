#!/usr/bin/env bash
# .text size of each tflm_ext kernel family for Cortex-M4 and Cortex-M7
# (objects built by `make -C tflm_ext cortex-m`: arm-none-eabi-g++ -mthumb -Os).
#
#   ./size_report.sh [BUILD_DIR]        (default: build, relative to tflm_ext/)
#
# A family's .text is the whole object file: argument validation plus the
# template instantiations for every bit combination (9 for conv, depthwise,
# fully connected and add; 3 per pool). Largest functions follow per CPU.
set -euo pipefail
cd "$(dirname "$0")"
BUILD="${1:-build}"
SIZE="${ARM_SIZE:-arm-none-eabi-size}"
NM="${ARM_NM:-arm-none-eabi-nm}"
command -v "$SIZE" >/dev/null || { echo "error: $SIZE not found (apt-get install -y gcc-arm-none-eabi)" >&2; exit 1; }

families="conv depthwise_conv fully_connected add pooling packing"
echo "arm-none-eabi-g++ $(arm-none-eabi-g++ -dumpfullversion), flags: -std=c++17 -mthumb -Os -fno-exceptions -fno-rtti -ffunction-sections"
echo
printf "| %-22s |" "kernel family (object)"
for cpu in cortex-m4 cortex-m7; do printf " %-16s |" "$cpu .text (B)"; done
echo
printf "|%s|" "------------------------"
for cpu in cortex-m4 cortex-m7; do printf "%s|" "------------------"; done
echo
declare -A total
for fam in $families; do
  printf "| %-22s |" "$fam"
  for cpu in cortex-m4 cortex-m7; do
    obj="$BUILD/$cpu/$fam.o"
    [ -f "$obj" ] || { echo; echo "error: $obj missing; run make -C tflm_ext cortex-m" >&2; exit 1; }
    # Sum of the .text* sections only (-ffunction-sections splits them);
    # berkeley-format "text" would also count .rodata.
    text=$("$SIZE" -A "$obj" | awk '$1 ~ /^\.text/ {s += $2} END {print s + 0}')
    total[$cpu]=$(( ${total[$cpu]:-0} + text ))
    printf " %16s |" "$text"
  done
  echo
done
printf "| %-22s |" "total"
for cpu in cortex-m4 cortex-m7; do printf " %16s |" "${total[$cpu]}"; done
echo
for cpu in cortex-m4 cortex-m7; do
  echo
  echo "$cpu: largest functions (nm --size-sort, bytes, demangled)"
  for fam in $families; do
    "$NM" --size-sort --radix=d -C "$BUILD/$cpu/$fam.o" \
      | awk -v f="$fam" '$2 ~ /^[tT]$/ {size = $1 + 0; $1 = ""; $2 = ""; sub(/^  /, ""); name = $0;
                         sub(/\([^()]*\)( \[clone [^]]*\])?$/, "", name); printf "  %-16s %6d  %s\n", f, size, name}' | tail -n 3
  done
done
