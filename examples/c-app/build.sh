#!/usr/bin/env bash
# build.sh: compiles one test fixture to an object file with d2nnc, builds the
# C example (main.c, bad_input.c, npy.c) against it and the runtime's static
# library, and runs it: on the fixture's inputs against the stored outputs
# (with 1 and 4 threads), then the bad-input checks. Exits non-zero on the
# first failure.
#
# usage: examples/c-app/build.sh [FIXTURE]
#   FIXTURE: a folder of tests/fixtures/ with model.onnx, input_0.npy and
#            output_0.npy (input_0_alt.npy / output_0_alt.npy are run too when
#            present); default skip_chain. Its name becomes the model's name.
#
# Environment:
#   CC                the C compiler (default cc); CFLAGS are added to its flags
#   CARGO             cargo (default cargo)
#   CARGO_TARGET_DIR  where cargo builds (default target); the program and the
#                     model go to $CARGO_TARGET_DIR/c-app/FIXTURE/
#   D2NNC             a d2nnc binary to use instead of `cargo run --release -p d2nnc`
#   FIXTURE_DIR       a folder laid out like a fixture to use instead of
#                     tests/fixtures/FIXTURE (FIXTURE then only names the model)
set -euo pipefail

fixture="${1:-skip_chain}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

here=examples/c-app
fixture_dir="${FIXTURE_DIR:-tests/fixtures/$fixture}"
if [[ ! -f "$fixture_dir/model.onnx" ]]; then
  echo "build.sh: no fixture $fixture_dir/model.onnx (see tests/fixtures/, or set FIXTURE_DIR)" >&2
  exit 2
fi
# The fixture's name is the model's name: the symbol prefix and the C macros'.
if [[ ! "$fixture" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
  echo "build.sh: fixture name '$fixture' is not a C identifier" >&2
  exit 2
fi

cc="${CC:-cc}"
cargo="${CARGO:-cargo}"
target="${CARGO_TARGET_DIR:-target}"
out="$target/c-app/$fixture"
upper="$(printf '%s' "$fixture" | tr '[:lower:]' '[:upper:]')"
read -r -a cflags <<< "${CFLAGS:-}"

echo "== building the runtime static library ($target/release/libd2nn_runtime.a)"
"$cargo" build --release -p d2nn-runtime-c
# The system libraries the Rust standard library needs in a C link, as rustc
# reports them for this platform (cargo replays the note when nothing changed).
native="$("$cargo" rustc --release -p d2nn-runtime-c -- --print native-static-libs 2>&1 | sed -n 's/.*native-static-libs: //p' | tail -n 1)"
if [[ -z "$native" ]]; then
  native="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
  echo "build.sh: rustc printed no native-static-libs; assuming Linux/glibc: $native" >&2
fi
read -r -a native_libs <<< "$native"

echo "== compiling $fixture_dir/model.onnx to $out/$fixture.o"
if [[ -n "${D2NNC:-}" ]]; then
  "$D2NNC" compile "$fixture_dir/model.onnx" --emit object -o "$out" --name "$fixture"
else
  "$cargo" run --release -p d2nnc -- compile "$fixture_dir/model.onnx" --emit object -o "$out" --name "$fixture"
fi

echo "== building $out/c-app with $cc"
"$cc" -std=c99 -O2 -Wall -Wextra -Werror -pedantic ${cflags[@]+"${cflags[@]}"} \
  -I"$out" -I"$here" -DMODEL="$fixture" -DMODEL_UPPER="$upper" \
  "$here/main.c" "$here/bad_input.c" "$here/npy.c" "$out/$fixture.o" \
  -L"$target/release" -ld2nn_runtime "${native_libs[@]}" -o "$out/c-app"

for input in "$fixture_dir"/input_0.npy "$fixture_dir"/input_0_*.npy; do
  [[ -f "$input" ]] || continue
  expected="$fixture_dir/output_0${input#"$fixture_dir"/input_0}"
  for threads in 1 4; do
    echo "== running on $input, $threads thread(s), against $expected"
    "$out/c-app" --threads "$threads" "$input" "$expected"
  done
done

echo "== bad-input checks"
"$out/c-app" --bad-input
echo "== $fixture: all good"
