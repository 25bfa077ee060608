#!/usr/bin/env bash
# Build lgreg with the `cuda` feature on a machine without a GPU or a CUDA toolkit package
# (recipe: CUDA.md in the shared notes). Targets sm_90 (H100/H200), CUDA 13.0.
#
# - The toolkit comes from the PyPI `nvidia-*` 13.0 wheels (they hold a real `nvcc`), cached in
#   $LGREG_CUDA_CACHE (default ~/.cache/lgreg-cuda), outside the source tree.
# - libcuda, cuBLAS and cuBLASLt are not in that wheel set: the link uses stub libraries with the right
#   sonames, generated from the symbols the first link attempt reports as undefined. At run
#   time the GPU machine's real libraries are loaded (set LD_LIBRARY_PATH there).
# Usage: scripts/build-cuda.sh [extra cargo args]   -> target/cuda/lgreg (CUDA build, stripped)
# The CUDA build has its own target directory, so it never replaces the CPU binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${LGREG_CUDA_CACHE:-$HOME/.cache/lgreg-cuda}"
tk="$cache/toolkit/nvidia/cu13"
stubs="$cache/stubs"
mkdir -p "$cache/wheels" "$cache/toolkit" "$stubs"

wheels=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
)
if [ ! -x "$tk/bin/nvcc" ]; then
  python3 -m pip download --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 \
    -d "$cache/wheels" "${wheels[@]}"
  for w in "$cache"/wheels/*.whl; do
    python3 -m zipfile -e "$w" "$cache/toolkit"
  done
  chmod +x "$tk"/bin/* "$tk"/nvvm/bin/* 2>/dev/null || true
fi
# Unversioned names next to the versioned libraries, for the linker.
for lib in cudart curand nvrtc; do
  versioned=$(ls "$tk/lib/lib$lib.so."* 2>/dev/null | sort | head -n1 || true)
  [ -n "$versioned" ] && ln -sf "$(basename "$versioned")" "$tk/lib/lib$lib.so"
done

# Stub libraries: start empty, add every symbol the link reports as undefined, relink.
make_stub() { # NAME SONAME SYMBOL_PREFIX_REGEX
  local name=$1 soname=$2 re=$3 src="$stubs/$1.c"
  touch "$stubs/$1.syms"
  { echo "/* link-time stub for $soname; never loaded at run time */"
    { grep -E "$re" "$stubs/$1.syms" || true; } | sort -u | sed 's/.*/void &(void) {}/'
  } > "$src"
  gcc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$name.so" "$src"
}
export PATH="$tk/bin:$PATH" CUDA_HOME="$tk" CUDA_PATH="$tk" CUDA_ROOT="$tk"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" CUDARC_CUDA_VERSION=13000
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$tk/lib -L native=$stubs -C link-arg=-Wl,--error-limit=0"
export LIBRARY_PATH="$tk/lib:$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"
for attempt in 1 2 3; do
  make_stub cuda libcuda.so.1 '^cu[A-Z]'
  make_stub cublas libcublas.so.13 '^cublas([^L]|L[^t])'
  make_stub cublasLt libcublasLt.so.13 '^cublasLt'
  if cargo build --release --features cuda --target-dir target/cuda "$@" 2> "$cache/build.log"; then
    break
  fi
  # GNU ld says "undefined reference to `sym'", rust-lld says "undefined symbol: sym".
  grep -oE "undefined reference to \`[A-Za-z0-9_]*'|undefined symbol: [A-Za-z0-9_]*" "$cache/build.log" \
    | sed -E "s/undefined reference to \`//; s/'//; s/undefined symbol: //" | sort -u > "$cache/undefined.syms" || true
  if [ ! -s "$cache/undefined.syms" ] || [ "$attempt" = 3 ]; then
    tail -n 40 "$cache/build.log" >&2
    exit 1
  fi
  cat "$cache/undefined.syms" >> "$stubs/cuda.syms"
  cat "$cache/undefined.syms" >> "$stubs/cublas.syms"
  cat "$cache/undefined.syms" >> "$stubs/cublasLt.syms"
done
readelf -d target/cuda/release/lgreg | grep NEEDED
# A stripped copy small enough to carry to a GPU machine (the release profile keeps line tables).
strip -o target/cuda/lgreg target/cuda/release/lgreg
echo "built target/cuda/lgreg ($(du -h target/cuda/lgreg | cut -f1), stripped) with cuda (sm_$CUDA_COMPUTE_CAP); run it with LD_LIBRARY_PATH=<cu13/lib>:<driver libs>"
